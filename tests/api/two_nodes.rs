//! Two real `tenantd serve` processes on one sqld and one Redis (docs/scale-out.md, piece 7):
//! each its own data directory, both with `--store sqld` and `--redis-url`, so they share the
//! catalog, every tenant and the real-time fan-out. A write through one is read through the
//! other at once; a member removed through one loses their channel on the other; a job runs
//! once with workers on both; one node killed, the other serves every tenant and has every
//! acknowledged write; a member of one tenant reaches no other through either node.
//!
//! Users and memberships have no admin API: the test makes them through its own handle on the
//! shared catalog (a third client of the namespace `central`), as `TestApp::user` does on a
//! local one. Runs when `SQLD_BIN` names sqld and `redis-server` is on PATH (see
//! `sqld_support`, `redis_support`).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tenantd::catalog::{Catalog, JobFilter, JobStatus, NewUser};

use crate::redis_support::Redis;
use crate::sqld_support::{spawn_sqld, Sqld};
use crate::support::{
    auth_form, bearer_on, eventually, frame_data, raw_request, request_to, spawn_serve, ws_at,
    Client, Reply, ServeProcess, Ws,
};

const PASSWORD: &str = "member-password-1";
/// A generous bound on what should take a few seconds (the 5 s for a revocation, a
/// poll of the job workers): waited for, never asserted as a speed.
const PATIENCE: Duration = Duration::from_secs(10);

/// Two nodes, their sqld and Redis. Fields drop in order: the nodes go before what they use.
struct Cluster {
    a: ServeProcess,
    b: ServeProcess,
    /// The first system admin's `Authorization` value (from A's first-start banner).
    admin: String,
    /// The test's own handle on the shared catalog: users and memberships.
    catalog: Catalog,
    /// The Pusher key both nodes speak for (kept in the shared catalog).
    key: String,
    _dirs: [tempfile::TempDir; 3],
    _redis: Redis,
    _sqld: Sqld,
}

/// `serve`'s options for a node of the cluster.
fn node_args(sqld: &Sqld, redis: &Redis) -> Vec<String> {
    [
        "--store",
        "sqld",
        "--sqld-url",
        &sqld.url(),
        "--sqld-admin-url",
        &sqld.admin_url(),
        "--redis-url",
        &redis.url_text(),
        // Receivers on loopback (the job test's).
        "--webhooks-allow-private",
        // The writers of the kill test outrun the per-member fallback limit.
        "--tenant-rate",
        "0",
        "--member-rate",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Both nodes running, or `None` when sqld or Redis tests are skipped.
fn cluster() -> Option<Cluster> {
    let sqld = spawn_sqld()?;
    let redis = Redis::start_or_skip()?;
    let args = node_args(&sqld, &redis);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    // The first node makes the catalog and prints the first admin, through the password line.
    let a = spawn_serve(dirs[0].path(), &args, 6);
    let field = |name: &str| {
        a.lines
            .iter()
            .find_map(|l| {
                l.trim_start()
                    .strip_prefix(name)
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {name} line in {:?}", a.lines))
    };
    let (email, password) = (field("email:"), field("password:"));
    let login = request_to(
        a.addr,
        "POST",
        "/api/admin/auth/login",
        &[],
        Some(&json!({"email": email, "password": password})),
    );
    assert_eq!(login.status, 200, "admin login: {}", login.text());
    let admin = format!("Bearer {}", login.json()["token"].as_str().unwrap());
    let b = spawn_serve(dirs[1].path(), &args, 1);
    let catalog = Catalog::open_sqld(dirs[2].path(), Arc::new(sqld.client())).unwrap();
    let key = catalog
        .meta_get("realtime_key")
        .unwrap()
        .expect("the Pusher key in the catalog");
    Some(Cluster {
        a,
        b,
        admin,
        catalog,
        key,
        _dirs: dirs,
        _redis: redis,
        _sqld: sqld,
    })
}

impl Cluster {
    /// A tenant made through A's admin API: its id.
    fn tenant(&self, slug: &str) -> String {
        let reply = call(
            self.a.addr,
            &self.admin,
            "POST",
            "/api/admin/tenants",
            Some(json!({"slug": slug, "name": format!("{slug} Inc"), "domains": []})),
        );
        assert_eq!(reply.status, 201, "create {slug}: {}", reply.text());
        reply.json()["id"].as_str().unwrap().to_string()
    }

    /// A user with `role` in each tenant (by id), signed in through A: (id, Authorization).
    fn member(&self, email: &str, tenants: &[&str], role: &str) -> (i64, String) {
        let user = self
            .catalog
            .create_user(&NewUser {
                email: email.into(),
                name: email.split('@').next().unwrap().into(),
                surname: String::new(),
                photo_url: None,
                password_hash: tenantd::auth::password::hash(PASSWORD).unwrap(),
            })
            .unwrap();
        for tenant in tenants {
            self.catalog.add_member(tenant, user.id, role).unwrap();
        }
        (user.id, bearer_on(self.a.addr, email, PASSWORD))
    }
}

/// One request with an `Authorization` value.
fn call(addr: SocketAddr, auth: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
    request_to(
        addr,
        method,
        path,
        &[("Authorization", auth)],
        body.as_ref(),
    )
}

fn new_order(title: &str) -> Value {
    json!({"title": title, "customer_name": "Ada", "amount_minor": 100, "currency": "EUR"})
}

/// An order made through `addr`: its id.
fn create_order(addr: SocketAddr, auth: &str, slug: &str, title: &str) -> i64 {
    let reply = call(
        addr,
        auth,
        "POST",
        &format!("/t/{slug}/api/orders"),
        Some(new_order(title)),
    );
    assert_eq!(
        reply.status,
        201,
        "order {title} in {slug}: {}",
        reply.text()
    );
    reply.json()["id"].as_i64().unwrap()
}

/// Every order of a tenant as `addr` lists it: id -> title.
fn orders(addr: SocketAddr, auth: &str, slug: &str) -> BTreeMap<i64, String> {
    let mut found = BTreeMap::new();
    let mut path = format!("/t/{slug}/api/orders?limit=100");
    loop {
        let reply = call(addr, auth, "GET", &path, None);
        assert_eq!(reply.status, 200, "orders of {slug}: {}", reply.text());
        let page = reply.json();
        for order in page["orders"].as_array().unwrap() {
            found.insert(
                order["id"].as_i64().unwrap(),
                order["title"].as_str().unwrap().to_string(),
            );
        }
        match page["next"].as_str() {
            Some(c) => path = format!("/t/{slug}/api/orders?limit=100&cursor={c}"),
            None => return found,
        }
    }
}

/// `POST /broadcasting/auth` on `addr`, as Echo posts it.
fn channel_auth(addr: SocketAddr, auth: &str, socket_id: &str, channel: &str) -> Reply {
    let mut client = Client::connect(addr);
    let form = auth_form(socket_id, channel);
    client.send(
        raw_request(
            "POST",
            "/broadcasting/auth",
            &[
                ("Authorization", auth),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            Some(&form),
        )
        .as_bytes(),
    );
    client.reply()
}

/// A socket on `addr` subscribed to a private channel through that node's authorization.
fn subscribed(cluster: &Cluster, addr: SocketAddr, auth: &str, channel: &str) -> Ws {
    let mut ws = ws_at(addr, &cluster.key);
    let reply = channel_auth(addr, auth, &ws.socket_id, channel);
    assert_eq!(reply.status, 200, "auth {channel}: {}", reply.text());
    ws.subscribe_with(channel, &reply.json());
    ws
}

/// The next event on the socket other than pongs, within `wait`.
fn next_event(ws: &mut Ws, wait: Duration) -> Option<Value> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = ws.recv_within(left)?;
        if frame["event"] != "pusher:pong" {
            return Some(frame);
        }
    }
}

fn orders_channel(tenant: &str) -> String {
    format!("private-company.{tenant}.orders")
}

#[test]
fn an_order_written_through_one_node_is_read_through_the_other_at_once() {
    let Some(c) = cluster() else {
        return;
    };
    let acme = c.tenant("acme");
    let (_, owner) = c.member("owner@acme.test", &[&acme], "admin");
    // Watching acme's orders on B: what is written through A reaches it through Redis.
    let mut on_b = subscribed(&c, c.b.addr, &owner, &orders_channel(&acme));
    let mut heard = Vec::new();
    let mut made = BTreeMap::new();
    for n in 0..4 {
        for (from, to, name) in [(c.a.addr, c.b.addr, "A"), (c.b.addr, c.a.addr, "B")] {
            let title = format!("through {name} #{n}");
            let id = create_order(from, &owner, "acme", &title);
            // The very next request, on the other node: no wait, no retry.
            let read = call(to, &owner, "GET", &format!("/t/acme/api/orders/{id}"), None);
            assert_eq!(read.status, 200, "{title} read back: {}", read.text());
            assert_eq!(read.json()["title"], title.as_str(), "{}", read.text());
            made.insert(id, title);
            hear(&mut on_b, id, &mut heard);
        }
    }
    assert_eq!(orders(c.a.addr, &owner, "acme"), made);
    assert_eq!(orders(c.b.addr, &owner, "acme"), made);
    // Each order's event reached B once, whichever node took the write.
    on_b.assert_nothing_pending();
    heard.sort();
    assert_eq!(heard, made.keys().copied().collect::<Vec<_>>());
}

/// Reads the socket's `order.created` events, noting their order ids, until `id`'s arrives.
fn hear(ws: &mut Ws, id: i64, heard: &mut Vec<i64>) {
    while !heard.contains(&id) {
        let event = next_event(ws, PATIENCE)
            .unwrap_or_else(|| panic!("no order.created for order {id}; heard {heard:?}"));
        assert_eq!(event["event"], "order.created", "{event}");
        heard.push(frame_data(&event)["id"].as_i64().expect("an order id"));
    }
}

#[test]
fn a_member_removed_through_b_loses_their_channel_on_a() {
    let Some(c) = cluster() else {
        return;
    };
    let acme = c.tenant("acme");
    let (_, owner) = c.member("owner@acme.test", &[&acme], "admin");
    let (carol_id, carol) = c.member("carol@acme.test", &[&acme], "agent");
    let channel = orders_channel(&acme);
    let mut carol_on_a = subscribed(&c, c.a.addr, &carol, &channel);
    let mut owner_on_a = subscribed(&c, c.a.addr, &owner, &channel);

    let started = Instant::now();
    let removed = call(
        c.b.addr,
        &owner,
        "DELETE",
        &format!("/t/acme/api/members/{carol_id}"),
        None,
    );
    assert_eq!(removed.status, 200, "{}", removed.text());
    let ended = next_event(&mut carol_on_a, PATIENCE)
        .unwrap_or_else(|| panic!("carol still holds {channel} on A after {PATIENCE:?}"));
    assert_eq!(ended["event"], "pusher:subscription_error", "{ended}");
    assert_eq!(ended["channel"], channel.as_str(), "{ended}");
    assert_eq!(frame_data(&ended)["status"], 403, "{ended}");
    eprintln!(
        "the channel ended on A {:?} after the removal on B",
        started.elapsed()
    );

    // A refuses her a new authorization, and her socket gets nothing more; the owner, still a
    // member, keeps the channel and hears of an order made through B.
    let again = channel_auth(c.a.addr, &carol, &carol_on_a.socket_id, &channel);
    assert_eq!(again.status, 403, "{}", again.text());
    let id = create_order(c.b.addr, &owner, "acme", "after carol left");
    let event = next_event(&mut owner_on_a, PATIENCE).expect("order.created on A");
    assert_eq!(event["event"], "order.created", "{event}");
    assert_eq!(frame_data(&event)["id"], id, "{event}");
    carol_on_a.assert_nothing_pending();
}

/// One request the receiver got: its `webhook-id` and body.
type Delivery = (String, Value);

/// An HTTP receiver on 127.0.0.1:0 that answers 200 to everything and keeps what it got.
fn receiver() -> (String, Arc<Mutex<Vec<Delivery>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let kept = Arc::clone(&got);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = HashMap::new();
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let len = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let id = headers.get("webhook-id").cloned().unwrap_or_default();
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            kept.lock().unwrap().push((id, body));
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

#[test]
fn a_job_enqueued_on_either_node_runs_once_with_workers_on_both() {
    let Some(c) = cluster() else {
        return;
    };
    let acme = c.tenant("acme");
    let (_, owner) = c.member("owner@acme.test", &[&acme], "admin");
    let (url, got) = receiver();
    let endpoint = call(
        c.a.addr,
        &owner,
        "POST",
        "/t/acme/api/webhook-endpoints",
        Some(json!({"url": url, "events": ["order.created"]})),
    );
    assert_eq!(endpoint.status, 201, "{}", endpoint.text());

    // Orders through both nodes at once: each node's enqueues wake its own workers, and each
    // node's workers poll for the other's jobs.
    let writers: Vec<_> = [(c.a.addr, "A", 12), (c.b.addr, "B", 6)]
        .into_iter()
        .map(|(addr, name, n)| {
            let owner = owner.clone();
            std::thread::spawn(move || {
                (0..n)
                    .map(|i| create_order(addr, &owner, "acme", &format!("{name} {i}")))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut made: Vec<i64> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    made.sort();
    let expected = made.len();

    // Every job finished (each took one webhook), then what the receiver got.
    let jobs = || {
        c.catalog
            .jobs(&JobFilter {
                kind: Some("webhook.deliver".into()),
                limit: 1000,
                ..JobFilter::default()
            })
            .unwrap()
    };
    let finished = eventually(PATIENCE + PATIENCE, || {
        let all = jobs();
        all.len() == expected && all.iter().all(|j| j.status == JobStatus::Done)
    });
    let all = jobs();
    let summary: Vec<_> = all.iter().map(|j| (j.id, j.status, j.attempts)).collect();
    assert!(
        finished,
        "want {expected} jobs done, have {}: {summary:?}",
        all.len()
    );
    assert!(all.iter().all(|j| j.attempts == 1), "{summary:?}");

    let got = got.lock().unwrap().clone();
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, _) in &got {
        *per_id.entry(id.as_str()).or_default() += 1;
    }
    assert!(
        per_id.values().all(|&n| n == 1),
        "a webhook twice: {per_id:?}"
    );
    assert!(!per_id.contains_key(""), "a delivery without webhook-id");
    let mut delivered: Vec<i64> = got
        .iter()
        .map(|(_, body)| body["data"]["order"]["id"].as_i64().expect("an order id"))
        .collect();
    delivered.sort();
    assert_eq!(delivered, made, "one delivery per order");
}

/// A write that may meet a dead node: its status and body, or `None` when the node is gone.
fn try_create_order(addr: SocketAddr, auth: &str, slug: &str, title: &str) -> Option<(u16, Value)> {
    let body = new_order(title).to_string();
    let raw = raw_request(
        "POST",
        &format!("/t/{slug}/api/orders"),
        &[("Authorization", auth)],
        Some(&body),
    );
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(PATIENCE)).ok()?;
    stream.write_all(raw.as_bytes()).ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// An order a node answered 201 for: (tenant slug, id, title).
type Acked = (String, i64, String);

#[test]
fn one_node_killed_the_other_serves_every_tenant_and_nothing_acknowledged_is_lost() {
    let Some(mut c) = cluster() else {
        return;
    };
    let slugs = ["acme", "globex", "initech"];
    let ids: Vec<String> = slugs.iter().map(|s| c.tenant(s)).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (_, owner) = c.member("owner@corp.test", &ids, "admin");

    // A writer per node, round the tenants, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let failed_on_b: Arc<Mutex<Vec<String>>> = Arc::default();
    let writers: Vec<_> = [(c.a.addr, "A"), (c.b.addr, "B")]
        .into_iter()
        .map(|(addr, name)| {
            let (stop, acked, failed_on_b) = (stop.clone(), acked.clone(), failed_on_b.clone());
            let owner = owner.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let slug = slugs[n % slugs.len()];
                    let title = format!("{name} {n}");
                    n += 1;
                    match try_create_order(addr, &owner, slug, &title) {
                        Some((201, body)) => {
                            let id = body["id"].as_i64().expect("the new order's id");
                            acked.lock().unwrap().push((slug.into(), id, title));
                        }
                        // A's answers after the kill are none; B's failures are kept.
                        other if name == "B" => failed_on_b
                            .lock()
                            .unwrap()
                            .push(format!("{title}: {other:?}")),
                        _ => {}
                    }
                }
            })
        })
        .collect();
    let count = |name: &str| {
        acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, t)| t.starts_with(name))
            .count()
    };
    assert!(
        eventually(PATIENCE * 3, || count("A") >= 15 && count("B") >= 15),
        "the writers did not get going: {:?}",
        acked.lock().unwrap()
    );
    c.a.child.kill().unwrap(); // SIGKILL: no shutdown, requests in flight cut
    c.a.child.wait().unwrap();
    let at_kill = count("B");
    assert!(
        eventually(PATIENCE * 3, || count("B") >= at_kill + 15),
        "B stopped acknowledging writes after A died: {:?}",
        failed_on_b.lock().unwrap()
    );
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let failed = failed_on_b.lock().unwrap().clone();
    assert!(failed.is_empty(), "writes refused by B: {failed:?}");

    // Every tenant still served by B, reads and writes; every acknowledged order there.
    let acked = acked.lock().unwrap().clone();
    for slug in slugs {
        let id = create_order(c.b.addr, &owner, slug, "after the kill");
        let listed = orders(c.b.addr, &owner, slug);
        assert_eq!(listed.get(&id).map(String::as_str), Some("after the kill"));
        for (_, id, title) in acked.iter().filter(|(s, _, _)| s == slug) {
            assert_eq!(
                listed.get(id),
                Some(title),
                "{slug}: acknowledged order {id} ({title}) lost"
            );
        }
    }
    assert!(acked.iter().any(|(_, _, t)| t.starts_with('A')));
}

#[test]
fn a_member_of_one_tenant_reaches_no_other_through_either_node() {
    let Some(c) = cluster() else {
        return;
    };
    let acme = c.tenant("acme");
    let globex = c.tenant("globex");
    let (_, xavier) = c.member("xavier@acme.test", &[&acme], "admin");
    let (_, yvonne) = c.member("yvonne@globex.test", &[&globex], "admin");
    // Acme's order has an id globex's orders do not have (ids count per tenant).
    for n in 0..2 {
        create_order(c.b.addr, &xavier, "acme", &format!("acme {n}"));
    }
    let x_order = create_order(c.a.addr, &xavier, "acme", "acme's secret");
    let y_order = create_order(c.b.addr, &yvonne, "globex", "globex's own");

    for (addr, node) in [(c.a.addr, "A"), (c.b.addr, "B")] {
        // Xavier's token names globex: by path, by header, for its channel.
        for path in [
            "/t/globex/api/orders".to_string(),
            format!("/t/globex/api/orders/{y_order}"),
            format!("/t/globex/api/orders/{x_order}"),
        ] {
            let reply = call(addr, &xavier, "GET", &path, None);
            assert!(
                matches!(reply.status, 401 | 403 | 404),
                "{node}: xavier read {path}: {} {}",
                reply.status,
                reply.text()
            );
        }
        let by_header = request_to(
            addr,
            "GET",
            "/api/orders",
            &[("Authorization", &xavier), ("X-Tenant-ID", &globex)],
            None,
        );
        assert!(
            matches!(by_header.status, 401 | 403 | 404),
            "{node}: xavier read globex by header: {}",
            by_header.text()
        );
        let mut ws = ws_at(addr, &c.key);
        let auth = channel_auth(addr, &xavier, &ws.socket_id, &orders_channel(&globex));
        assert_eq!(auth.status, 403, "{node}: {}", auth.text());
        ws.assert_nothing_pending();

        // Acme's order is never under globex, whoever asks and through either node.
        let listed = orders(addr, &yvonne, "globex");
        assert_eq!(
            listed.values().collect::<Vec<_>>(),
            ["globex's own"],
            "{node}"
        );
        let acme_id_in_globex = call(
            addr,
            &yvonne,
            "GET",
            &format!("/t/globex/api/orders/{x_order}"),
            None,
        );
        assert_eq!(acme_id_in_globex.status, 404, "{node}");
        let acme_orders = orders(addr, &xavier, "acme");
        assert_eq!(acme_orders.len(), 3, "{node}");
        assert_eq!(acme_orders[&x_order], "acme's secret", "{node}");
    }
}
