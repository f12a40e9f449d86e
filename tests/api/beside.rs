//! Other processes on the server's data directory while it serves: the CLI, a plain second
//! SQLite connection, two CLI commands at once, and a second server. SQLite's locks belong to
//! the process and the file, so anything in the server that closed a descriptor of a database
//! file would drop them and let these processes rebuild the WAL index under it.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::support::{request_to, spawn_serve};

const TENANTS: [&str; 3] = ["alpha", "beta", "gamma"];
const PASSWORD: &str = "beside-password-1";

pub(crate) fn cli(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args(args)
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run tenantd")
}

pub(crate) fn cli_ok(data: &Path, args: &[&str]) -> Output {
    let out = cli(data, args);
    assert!(
        out.status.success(),
        "tenantd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A data directory with these tenants, each with `email` (password `password`) as its admin.
pub(crate) fn tenants_with_owner(dir: &Path, email: &str, password: &str, slugs: &[&str]) {
    crate::cli::init_data_dir(dir);
    cli_ok(
        dir,
        &[
            "users",
            "create",
            "--email",
            email,
            "--name",
            "Owner",
            "--password",
            password,
        ],
    );
    for slug in slugs {
        cli_ok(dir, &["tenants", "create", slug, "--name", slug]);
        cli_ok(
            dir,
            &[
                "members", "add", "--tenant", slug, "--email", email, "--role", "admin",
            ],
        );
    }
}

fn tenant_ids(data: &Path) -> Vec<String> {
    let out = cli_ok(data, &["tenants", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON list");
    let rows = list
        .as_array()
        .or_else(|| list["tenants"].as_array())
        .expect("an array of tenants")
        .clone();
    rows.iter()
        .map(|t| t["id"].as_str().expect("id").to_string())
        .collect()
}

/// A second connection as an operator's script would make it: open, read, write, close.
fn second_connection(path: &Path, write: bool) {
    let conn = rusqlite::Connection::open(path).expect("open beside the server");
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let _: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    if write {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS operator_notes (id INTEGER PRIMARY KEY, note TEXT);
             INSERT INTO operator_notes (note) VALUES ('checked');",
        )
        .expect("write beside the server");
    }
}

/// Two CLI commands started together; both must succeed.
fn at_once(data: &Path, a: Vec<String>, b: Vec<String>) {
    let run = |args: Vec<String>| {
        thread::spawn({
            let data = data.to_path_buf();
            move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                (cli(&data, &args), args.join(" "))
            }
        })
    };
    let (a, b) = (run(a), run(b));
    for (out, args) in [a.join().unwrap(), b.join().unwrap()] {
        assert!(
            out.status.success(),
            "tenantd {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn other_processes_on_the_data_directory_never_take_the_server_down() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    tenants_with_owner(dir, "owner@beside.test", PASSWORD, &TENANTS);
    let ids = tenant_ids(dir);
    assert_eq!(ids.len(), TENANTS.len());

    // Clients in tight loops, as no person is: unlimited.
    let mut server = spawn_serve(dir, &["--tenant-rate", "0", "--member-rate", "0"], 1);
    let addr = server.addr;
    let login = request_to(
        addr,
        "POST",
        "/api/auth/login",
        &[],
        Some(&serde_json::json!({"email": "owner@beside.test", "password": PASSWORD})),
    );
    assert_eq!(login.status, 200, "{}", login.text());
    let token = login.json()["token"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {token}");

    // Clients writing orders (tenant files) and tokens (the catalog) and reading them back.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let clients: Vec<_> = TENANTS
        .iter()
        .map(|slug| {
            let (stop, acknowledged, failures) = (
                Arc::clone(&stop),
                Arc::clone(&acknowledged),
                Arc::clone(&failures),
            );
            let (slug, bearer) = (slug.to_string(), bearer.clone());
            thread::spawn(move || {
                let auth = [("Authorization", bearer.as_str())];
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let order = serde_json::json!({
                        "title": format!("order {n}"), "customer_name": "Buyer",
                        "amount_minor": n, "currency": "EUR"
                    });
                    let path = format!("/t/{slug}/api/orders");
                    let created = request_to(addr, "POST", &path, &auth, Some(&order));
                    if created.status != 201 {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("create: {created:?}"));
                        return;
                    }
                    let id = created.json()["id"].as_i64().unwrap();
                    acknowledged.lock().unwrap().push((slug.clone(), id));
                    let read = request_to(addr, "GET", &format!("{path}/{id}"), &auth, None);
                    if read.status != 200 {
                        failures.lock().unwrap().push(format!("read: {read:?}"));
                        return;
                    }
                    if n % 4 == 0 {
                        let body = serde_json::json!({"name": format!("t{n}"), "tenant": slug});
                        let made = request_to(addr, "POST", "/api/tokens", &auth, Some(&body));
                        if made.status != 201 {
                            failures.lock().unwrap().push(format!("token: {made:?}"));
                            return;
                        }
                    }
                }
            })
        })
        .collect();

    let alive = |server: &mut crate::support::ServeProcess, after: &str| {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("the server died ({status}) after {after}");
        }
    };
    let central = dir.join("central.db");
    let tenant_files: Vec<_> = ids
        .iter()
        .map(|id| dir.join("tenants").join(format!("{id}.db")))
        .collect();

    // 200 CLI commands, each followed by a plain second connection to a file.
    for i in 0..200 {
        let slug = TENANTS[i % TENANTS.len()];
        let domain = format!("d{i}.{slug}.test");
        let args: Vec<&str> = match i % 5 {
            0 => vec!["tenants", "list"],
            1 => vec!["tenants", "show", slug],
            2 => vec!["migrate"],
            3 => vec!["tenants", "domains", "add", slug, &domain],
            _ => vec!["migrate", "--status"],
        };
        cli_ok(dir, &args);
        alive(&mut server, &format!("CLI run {i}: tenantd {args:?}"));
        let file = if i % 2 == 0 {
            &central
        } else {
            &tenant_files[i % tenant_files.len()]
        };
        second_connection(file, i % 3 != 0);
        alive(&mut server, &format!("second connection {i} to {file:?}"));
    }

    // 50 pairs of CLI commands at once: each pair writes the catalog twice, then twice more.
    for i in 0..50 {
        let emails = [
            format!("pair{i}a@beside.test"),
            format!("pair{i}b@beside.test"),
        ];
        let slug = TENANTS[i % TENANTS.len()];
        let create = |email: &str| -> Vec<String> {
            [
                "users",
                "create",
                "--email",
                email,
                "--name",
                "Pair",
                "--password",
                PASSWORD,
            ]
            .map(String::from)
            .to_vec()
        };
        let add = |email: &str| -> Vec<String> {
            [
                "members", "add", "--tenant", slug, "--email", email, "--role", "viewer",
            ]
            .map(String::from)
            .to_vec()
        };
        at_once(dir, create(&emails[0]), create(&emails[1]));
        at_once(dir, add(&emails[0]), add(&emails[1]));
        alive(&mut server, &format!("CLI pair {i}"));
    }

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    alive(&mut server, "the whole run");
    assert_eq!(failures.lock().unwrap().as_slice(), &[] as &[String]);
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= TENANTS.len(),
        "the clients wrote while the commands ran"
    );
    drop(server);

    // Every acknowledged write is in its tenant's file, and every file is intact.
    for (slug, id) in &acknowledged {
        let index = TENANTS.iter().position(|s| s == slug).unwrap();
        let file = dir.join("tenants").join(format!("{}.db", ids[index]));
        let conn = rusqlite::Connection::open(&file).unwrap();
        let found: i64 = conn
            .query_row("SELECT count(*) FROM orders WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(found, 1, "order {id} of {slug} was acknowledged");
    }
    for file in std::iter::once(&central).chain(&tenant_files) {
        let conn = rusqlite::Connection::open(file).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "{file:?}");
    }
    let members: i64 = rusqlite::Connection::open(&central)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM users WHERE email LIKE 'pair%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(members, 100);
}

/// `tenantd serve` on `data` that is expected to refuse to start: its exit code and stderr.
fn serve_refused(data: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A server that did start would never exit: bound the wait, then fail with what it said.
    let waited = crate::support::eventually(Duration::from_secs(20), || {
        child.try_wait().unwrap().is_some()
    });
    if !waited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_second_server_on_the_same_data_directory_refuses_to_start() {
    let data = tempfile::tempdir().unwrap();
    let first = spawn_serve(data.path(), &[], 1);
    let (code, stderr) = serve_refused(data.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("another tenantd server is running on the data directory"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&first.child.id().to_string()),
        "names the running server's process: {stderr}"
    );
    let reply = request_to(first.addr, "GET", "/healthz", &[], None);
    assert_eq!(reply.status, 200, "the first server serves on");
    drop(first);
    // Once it is gone, the directory is free again.
    let again = spawn_serve(data.path(), &[], 1);
    assert_eq!(
        request_to(again.addr, "GET", "/healthz", &[], None).status,
        200
    );
}

/// Makes `dir` refuse new files, also to root (whom permission bits do not stop).
struct ReadOnlyDir<'a>(&'a Path);

impl<'a> ReadOnlyDir<'a> {
    fn new(dir: &'a Path) -> ReadOnlyDir<'a> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let status = Command::new("chattr").arg("+i").arg(dir).status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "as root, this test needs chattr +i to make a directory read-only"
            );
        }
        ReadOnlyDir(dir)
    }
}

impl Drop for ReadOnlyDir<'_> {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let _ = Command::new("chattr").arg("-i").arg(self.0).status();
        }
        let _ = std::fs::set_permissions(self.0, std::fs::Permissions::from_mode(0o755));
    }
}

#[test]
fn a_data_directory_the_server_cannot_write_is_refused_at_start() {
    let data = tempfile::tempdir().unwrap();
    // A complete installation first, then the directory made read-only.
    drop(spawn_serve(data.path(), &[], 1));
    let _read_only = ReadOnlyDir::new(data.path());
    let (code, stderr) = serve_refused(data.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot write to"), "{stderr}");
    assert!(stderr.contains("--data"), "{stderr}");
}
