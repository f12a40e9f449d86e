//! Moving a tenant between its local file and an sqld namespace (`tenancy::moves`): through the
//! admin API and the CLI, online (a writer keeps posting orders over HTTP through the move, and
//! every order it was told was made is in the new copy), with another tenant beside it left
//! alone, and the refusals as JSON errors. The real libSQL server runs when `SQLD_BIN` names it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value as Json};
use tenantd::api::rate_limit::Rates;
use tenantd::catalog::TenantStore;
use tenantd::sqld::Client;
use tenantd::store::sqld::SqldRead;
use tenantd::store::{Sql, Value};

use crate::backups::{new_order, order_ids};
use crate::sqld_support::{spawn_sqld, Sqld};
use crate::support::{raw_request, request_to, spawn_app, spawn_app_with, TestApp};

/// A server whose tenants are made as local files, with an sqld server to move them to; `None`
/// when sqld tests are skipped.
fn app_with_sqld() -> Option<(TestApp, Sqld)> {
    let sqld = spawn_sqld()?;
    let client = Arc::new(sqld.client());
    let test = spawn_app_with(|c| {
        c.registry.sqld = Some(client);
        // The writer below posts as fast as the server answers: no rate limit may refuse it.
        c.rate_limit.rates = Rates {
            tenant_per_min: 100_000_000,
            member_per_min: 100_000_000,
        };
    });
    Some((test, sqld))
}

fn id(record: &Json) -> String {
    record["id"].as_str().unwrap().to_string()
}

/// Every row of every table of a tenant's database (but the migrations' record), each table's
/// rows sorted: what a move must carry over unchanged.
fn dump(db: &dyn Sql) -> BTreeMap<String, Vec<String>> {
    let tables = db
        .query_map(
            "SELECT name FROM sqlite_schema WHERE type = 'table'
               AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
               AND name NOT LIKE '\\_tenantd\\_%' ESCAPE '\\'
               AND name <> 'schema_migrations'",
            &[],
            |r| r.get::<String>(0),
        )
        .unwrap();
    tables
        .into_iter()
        .map(|table| {
            let mut rows = db
                .query_map(&format!("SELECT * FROM \"{table}\""), &[], |r| {
                    let values: Vec<Value> = (0..r.column_count())
                        .map(|i| r.value(i).map(|v| v.to_owned()))
                        .collect::<Result<_, _>>()?;
                    Ok(format!("{values:?}"))
                })
                .unwrap();
            rows.sort();
            (table, rows)
        })
        .collect()
}

fn dump_file(test: &TestApp, id: &str) -> BTreeMap<String, Vec<String>> {
    let conn = rusqlite::Connection::open(test.tenant_file(id)).unwrap();
    dump(&conn)
}

fn dump_namespace(client: &Client, id: &str) -> BTreeMap<String, Vec<String>> {
    dump(&SqldRead {
        client,
        namespace: id,
    })
}

fn count(db: &dyn Sql, sql: &str) -> i64 {
    db.query_one(sql, &[], |r| r.get::<i64>(0)).unwrap()
}

fn move_to(test: &TestApp, slug: &str, to: &str) -> crate::support::Reply {
    test.admin(
        "POST",
        &format!("/api/admin/tenants/{slug}/move"),
        Some(json!({ "to": to })),
    )
}

/// `move_to` on a connection that waits as long as the move takes: beside a writer that posts
/// as fast as it is answered, on a slow machine, that can be longer than the test client's
/// usual read timeout. Its status and JSON body.
fn move_waiting(test: &TestApp, slug: &str, to: &str) -> (u16, Json) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(test.server.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(300)))
        .unwrap();
    let auth = format!("Bearer {}", test.admin_token);
    let body = json!({ "to": to }).to_string();
    let request = raw_request(
        "POST",
        &format!("/api/admin/tenants/{slug}/move"),
        &[("Authorization", &auth)],
        Some(&body),
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap_or(Json::Null))
}

fn store_of(test: &TestApp, slug: &str) -> TenantStore {
    test.app.catalog.by_slug(slug).unwrap().unwrap().store
}

/// The files a move leaves of a tenant's old file: `<uuid>.db.moved-<unix>`.
fn kept_copies(test: &TestApp, id: &str) -> Vec<String> {
    std::fs::read_dir(test.data.path().join("tenants"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{id}.db.moved-")) && !n.ends_with("-wal"))
        .filter(|n| !n.ends_with("-shm"))
        .collect()
}

/// Orders, a chat with messages and a file, as a tenant's members make them.
fn fill(test: &TestApp, slug: &str) {
    for n in 1..=4 {
        let made = test.on(
            &test.owner_token,
            slug,
            "POST",
            "/api/orders",
            Some(new_order(n)),
        );
        assert_eq!(made.status, 201, "{}", made.text());
    }
    let order = order_ids(test, slug)[0];
    let changed = test.on(
        &test.owner_token,
        slug,
        "PATCH",
        &format!("/api/orders/{order}"),
        Some(json!({"status": "confirmed"})),
    );
    assert_eq!(changed.status, 200, "{}", changed.text());
    let chat = test.on(
        &test.owner_token,
        slug,
        "POST",
        "/api/chats",
        Some(json!({"title": "general", "kind": "group", "participant_ids": []})),
    );
    assert_eq!(chat.status, 201, "{}", chat.text());
    let chat = chat.json()["id"].as_i64().unwrap();
    for body in ["hello", "world"] {
        let said = test.on(
            &test.owner_token,
            slug,
            "POST",
            &format!("/api/chats/{chat}/messages"),
            Some(json!({ "body": body })),
        );
        assert_eq!(said.status, 201, "{}", said.text());
    }
    let mut c = test.server.connect();
    let bytes = b"the plan";
    c.send(
        format!(
            "POST /t/{slug}/api/orders/{order}/files?name=plan.txt HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            test.owner_token,
            bytes.len()
        )
        .as_bytes(),
    );
    c.send(bytes);
    let up = c.reply();
    assert_eq!(up.status, 201, "{}", up.text());
}

#[test]
fn a_tenant_moves_to_sqld_and_back_with_every_row_and_its_neighbour_untouched() {
    let Some((test, sqld)) = app_with_sqld() else {
        return;
    };
    let client = sqld.client();
    let acme = id(&test.create_tenant("acme", &[]));
    let globex = id(&test.create_tenant("globex", &[]));
    fill(&test, "acme");
    fill(&test, "globex");
    let made = test.on(
        &test.owner_token,
        "globex",
        "POST",
        "/api/orders",
        Some(new_order(99)),
    );
    assert_eq!(made.status, 201);
    let before = dump_file(&test, &acme);
    assert_eq!(before["orders"].len(), 4);
    assert_eq!(before["messages"].len(), 2);
    assert_eq!(before["files"].len(), 1);
    assert!(!before["chat_participants"].is_empty());
    let globex_before = dump_file(&test, &globex);

    let moved = move_to(&test, "acme", "sqld");
    assert_eq!(moved.status, 200, "{}", moved.text());
    let moved = moved.json();
    assert_eq!(moved["from"], "local", "{moved}");
    assert_eq!(moved["to"], "sqld");
    assert_eq!(moved["tenant"]["store"], "sqld");
    assert_eq!(store_of(&test, "acme"), TenantStore::Sqld);
    assert!(client.namespace_exists(&acme).unwrap());
    assert!(!test.tenant_file(&acme).exists());
    assert_eq!(
        kept_copies(&test, &acme).len(),
        1,
        "the old file is kept aside"
    );
    assert_eq!(dump_namespace(&client, &acme), before);
    // The kept file is no orphan, and the tenant's schema is read where it now is.
    let out = test.cli(&[
        "migrate",
        "--status",
        "--json",
        "--sqld-url",
        &sqld.url(),
        "--sqld-admin-url",
        &sqld.admin_url(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let status: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["orphans"], json!([]), "{status}");
    let acme_status = status["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["slug"] == "acme")
        .unwrap()
        .clone();
    assert_eq!(acme_status["error"], Json::Null, "{acme_status}");
    assert_eq!(
        acme_status["version"], status["tenant_target"],
        "{acme_status}"
    );

    // Served from the namespace now: what was there, and what is written next.
    assert_eq!(order_ids(&test, "acme").len(), 4);
    let made = test.on(
        &test.owner_token,
        "acme",
        "POST",
        "/api/orders",
        Some(new_order(5)),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    let ns = SqldRead {
        client: &client,
        namespace: &acme,
    };
    assert_eq!(count(&ns, "SELECT count(*) FROM orders"), 5);
    // Only acme's rows went there.
    assert_eq!(
        count(&ns, "SELECT count(*) FROM orders WHERE title = 'order 99'"),
        0
    );
    let owner = (&ns as &dyn Sql)
        .query_one("SELECT value FROM tenant_meta WHERE key = 'id'", &[], |r| {
            r.get::<String>(0)
        })
        .unwrap();
    assert_eq!(owner, acme);
    // The neighbour: the same rows, still in its file.
    assert_eq!(store_of(&test, "globex"), TenantStore::Local);
    assert!(!client.namespace_exists(&globex).unwrap());
    assert_eq!(dump_file(&test, &globex), globex_before);
    assert_eq!(order_ids(&test, "globex").len(), 5);

    // And back, from the shell, while the server runs.
    let on_sqld = dump_namespace(&client, &acme);
    let out = test.cli(&[
        "tenants",
        "move",
        "acme",
        "--to",
        "local",
        "--sqld-url",
        &sqld.url(),
        "--sqld-admin-url",
        &sqld.admin_url(),
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("moved acme from sqld to local"));
    assert_eq!(store_of(&test, "acme"), TenantStore::Local);
    assert!(test.tenant_file(&acme).exists());
    assert!(!client.namespace_exists(&acme).unwrap());
    assert_eq!(dump_file(&test, &acme), on_sqld);
    // The server notices and reopens the tenant where it now is.
    assert_eq!(order_ids(&test, "acme").len(), 5);
    let made = test.on(
        &test.owner_token,
        "acme",
        "POST",
        "/api/orders",
        Some(new_order(6)),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    assert_eq!(dump_file(&test, &acme)["orders"].len(), 6);
    assert_eq!(dump_file(&test, &globex), globex_before);

    // Both moves are in the audit log, with where from and where to.
    let audit = test.admin("GET", "/api/admin/audit?action=tenant.moved", None);
    assert_eq!(audit.status, 200, "{}", audit.text());
    let entries = audit.json()["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let moves: Vec<(Json, Json)> = entries
        .iter()
        .map(|e| (e["details"]["from"].clone(), e["details"]["to"].clone()))
        .collect();
    assert!(
        moves.contains(&(json!("local"), json!("sqld"))),
        "{moves:?}"
    );
    assert!(
        moves.contains(&(json!("sqld"), json!("local"))),
        "{moves:?}"
    );
    assert!(entries.iter().all(|e| e["tenant_id"] == acme.as_str()));
}

#[test]
fn every_order_acknowledged_during_moves_is_in_the_new_copy() {
    let Some((test, sqld)) = app_with_sqld() else {
        return;
    };
    let client = sqld.client();
    let acme = id(&test.create_tenant("acme", &[]));
    // Enough rows that the copy takes several pages.
    {
        let conn = rusqlite::Connection::open(test.tenant_file(&acme)).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        conn.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1500)
             INSERT INTO orders (number, title, customer_name, amount_minor, currency, status,
                                 created_by, created_at, updated_at)
             SELECT 100000 + i, 'bulk ' || i, 'Buyer', i, 'EUR', 'new', 1,
                    '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z' FROM n;",
        )
        .unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let made_count = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (stop, made_count) = (Arc::clone(&stop), Arc::clone(&made_count));
        let addr = test.server.addr;
        let auth = format!("Bearer {}", test.owner_token);
        std::thread::spawn(move || {
            let mut made = Vec::new();
            let mut refused = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let reply = request_to(
                    addr,
                    "POST",
                    "/t/acme/api/orders",
                    &[("Authorization", &auth)],
                    Some(&new_order(n)),
                );
                match reply.status {
                    201 => {
                        made.push(reply.json()["id"].as_i64().unwrap());
                        made_count.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {
                        // As a client should: again after the Retry-After it was given.
                        let wait = reply
                            .header("retry-after")
                            .and_then(|s| s.parse::<u64>().ok())
                            .unwrap_or(0);
                        refused.push((reply.status, reply.text()));
                        std::thread::sleep(std::time::Duration::from_secs(wait.min(2)));
                    }
                }
            }
            (made, refused)
        })
    };
    let wait_for = |more: usize| {
        let target = made_count.load(Ordering::SeqCst) + more;
        while made_count.load(Ordering::SeqCst) < target {
            assert!(!writer.is_finished(), "the writer stopped");
            std::thread::yield_now();
        }
    };

    wait_for(5);
    let (status, moved) = move_waiting(&test, "acme", "sqld");
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["tenant"]["store"], "sqld", "{moved}");
    wait_for(5);
    let (status, moved) = move_waiting(&test, "acme", "local");
    assert_eq!(status, 200, "{moved}");
    wait_for(5);
    stop.store(true, Ordering::SeqCst);
    let (made, refused) = writer.join().unwrap();

    assert!(!client.namespace_exists(&acme).unwrap());
    let conn = rusqlite::Connection::open(test.tenant_file(&acme)).unwrap();
    let mut missing = Vec::new();
    for id in &made {
        let there = count(
            &conn,
            &format!("SELECT count(*) FROM orders WHERE id = {id}"),
        );
        if there != 1 {
            missing.push(*id);
        }
    }
    assert!(missing.is_empty(), "acknowledged and lost: {missing:?}");
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM orders WHERE title LIKE 'bulk %'"
        ),
        1500
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM orders WHERE title LIKE 'order %'"
        ),
        made.len() as i64,
        "nothing refused was written"
    );
    // Only the pauses refused writes, and they said why.
    let mut by_reason = BTreeMap::new();
    for (status, body) in &refused {
        let code =
            serde_json::from_str::<Json>(body).map_or(Json::Null, |b| b["error"]["code"].clone());
        *by_reason.entry(format!("{status} {code}")).or_insert(0) += 1;
    }
    eprintln!("{} orders made; refused: {by_reason:?}", made.len());
    // Two pauses: each refuses the writer that waited for it, which comes back after the
    // Retry-After it is given, when the move is done.
    assert!(
        refused.len() <= 6,
        "{} refused: {by_reason:?}",
        refused.len()
    );
    for (status, body) in &refused {
        assert_eq!(*status, 503, "{body}");
        assert!(body.contains("tenant_moved"), "{body}");
    }
}

#[test]
fn moves_that_cannot_be_made_are_refused_with_their_reason() {
    let Some((test, sqld)) = app_with_sqld() else {
        return;
    };
    let client = sqld.client();
    let acme = id(&test.create_tenant("acme", &[]));

    let reply = move_to(&test, "acme", "local");
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "already_there");
    let reply = move_to(&test, "acme", "mars");
    assert_eq!(reply.status, 422, "{}", reply.text());
    let reply = test.admin(
        "POST",
        "/api/admin/tenants/acme/move",
        Some(json!({"where": "sqld"})),
    );
    assert!(
        (400..500).contains(&reply.status),
        "{}: {}",
        reply.status,
        reply.text()
    );
    let reply = move_to(&test, "nobody", "sqld");
    assert_eq!(reply.status, 404, "{}", reply.text());

    // While a restore (or purge) runs, and while another move does.
    let registry = &test.app.registry;
    {
        let _restoring = registry.mark_restoring(&acme, "acme").unwrap();
        let reply = move_to(&test, "acme", "sqld");
        assert_eq!(reply.status, 409, "{}", reply.text());
        assert_eq!(reply.json()["error"]["code"], "tenant_busy");
    }
    {
        let _moving = registry.mark_moving(&acme, "acme").unwrap();
        let reply = move_to(&test, "acme", "sqld");
        assert_eq!(reply.status, 409, "{}", reply.text());
        assert_eq!(reply.json()["error"]["code"], "tenant_busy");
        // And a move keeps a restore or purge out.
        assert!(registry.mark_restoring(&acme, "acme").is_err());
    }
    assert!(!client.namespace_exists(&acme).unwrap());

    // Not a tenant that is not active.
    let pending = tenantd::tenancy::lifecycle::create_provisioning(
        &test.app.catalog,
        &tenantd::tenancy::lifecycle::NewTenant {
            slug: "pending".into(),
            name: "Pending".into(),
            domains: vec![],
        },
        tenantd::catalog::TenantStore::Local,
    )
    .unwrap();
    let reply = move_to(&test, "pending", "sqld");
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "wrong_status");
    assert!(!client.namespace_exists(&pending.id).unwrap());
    assert_eq!(
        test.admin("DELETE", "/api/admin/tenants/acme", None).status,
        200
    );
    let reply = move_to(&test, "acme", "sqld");
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "wrong_status");
    assert!(!client.namespace_exists(&acme).unwrap());
    assert!(test.tenant_file(&acme).exists());
    assert_eq!(store_of(&test, "acme"), TenantStore::Local);

    // Not by a member of a tenant: system admins only.
    let reply = test.as_bearer(
        &test.owner_token.clone(),
        "POST",
        "/api/admin/tenants/acme/move",
        &[],
        Some(json!({"to": "sqld"})),
    );
    assert!(
        reply.status == 401 || reply.status == 403,
        "{}",
        reply.text()
    );

    // The shell says what is wrong with its arguments.
    let out = test.cli(&["tenants", "move", "acme", "--to", "mars"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn a_move_that_fails_halfway_is_undone_and_the_tenant_stays_where_it_was() {
    let Some((test, sqld)) = app_with_sqld() else {
        return;
    };
    let client = sqld.client();
    let acme = id(&test.create_tenant("acme", &[]));
    fill(&test, "acme");
    // A row the new copy refuses (its CHECK constraint), written past the old copy's own: the
    // copy fails after the change capture is in place.
    let conn = rusqlite::Connection::open(test.tenant_file(&acme)).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn.execute_batch(
        "PRAGMA ignore_check_constraints = ON;
         UPDATE orders SET status = 'lost' WHERE id = (SELECT max(id) FROM orders);",
    )
    .unwrap();
    let before = dump_file(&test, &acme);

    let reply = move_to(&test, "acme", "sqld");
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "move_failed");
    assert!(reply.text().contains("CHECK"), "{}", reply.text());
    assert_eq!(store_of(&test, "acme"), TenantStore::Local);
    assert!(!client.namespace_exists(&acme).unwrap());
    // No trigger or log of the move is left behind, and the tenant writes as before.
    let leftovers = count(
        &conn,
        "SELECT count(*) FROM sqlite_schema WHERE name LIKE '\\_tenantd\\_%' ESCAPE '\\'",
    );
    assert_eq!(leftovers, 0);
    assert_eq!(dump_file(&test, &acme), before);
    let made = test.on(
        &test.owner_token,
        "acme",
        "POST",
        "/api/orders",
        Some(new_order(9)),
    );
    assert_eq!(made.status, 201, "{}", made.text());

    // Once the row is mended, the move goes through.
    conn.execute("UPDATE orders SET status = 'new' WHERE status = 'lost'", [])
        .unwrap();
    drop(conn);
    let reply = move_to(&test, "acme", "sqld");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(store_of(&test, "acme"), TenantStore::Sqld);
    assert_eq!(dump_namespace(&client, &acme)["orders"].len(), 5);
}

#[test]
fn a_server_whose_tenant_went_to_sqld_and_back_by_the_shell_serves_the_new_file() {
    let Some((test, sqld)) = app_with_sqld() else {
        return;
    };
    let acme = id(&test.create_tenant("acme", &[]));
    let made = test.on(
        &test.owner_token,
        "acme",
        "POST",
        "/api/orders",
        Some(new_order(1)),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    // The server's pool of acme's file stays open while the shell moves it there and back,
    // with no request between: the path now names a new file, the pool the old one.
    for to in ["sqld", "local"] {
        let out = test.cli(&[
            "tenants",
            "move",
            "acme",
            "--to",
            to,
            "--sqld-url",
            &sqld.url(),
            "--sqld-admin-url",
            &sqld.admin_url(),
        ]);
        assert!(out.status.success(), "{out:?}");
    }
    assert_eq!(kept_copies(&test, &acme).len(), 1);
    let made = test.on(
        &test.owner_token,
        "acme",
        "POST",
        "/api/orders",
        Some(new_order(2)),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    assert_eq!(order_ids(&test, "acme").len(), 2);
    assert_eq!(dump_file(&test, &acme)["orders"].len(), 2);
}

#[test]
fn a_move_to_sqld_without_an_sqld_server_is_refused() {
    let test = spawn_app();
    let acme = id(&test.create_tenant("acme", &[]));
    let reply = move_to(&test, "acme", "sqld");
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "validation_failed");
    assert!(test.tenant_file(&acme).exists());
    assert_eq!(store_of(&test, "acme"), TenantStore::Local);
    let out = test.cli(&["tenants", "move", "acme", "--to", "sqld"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sqld"),
        "{out:?}"
    );
}
