//! `tenantd backup`, `backups list` and `restore` with the real binary: a backup beside a
//! running server, a restore refused while it runs, a restore killed at every step (the
//! `TENANTD_FAILPOINT` test hook) leaving the old file or the new one, whole and served;
//! refused files; `--as` making a clone with its own id and data.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

use crate::beside::cli_ok;
use crate::cli::init_data_dir;
use crate::support::{request_to, spawn_serve};

pub(crate) const EMAIL: &str = "owner@backups.test";
pub(crate) const PASSWORD: &str = "owner-password-1";

fn cli_env(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args(args)
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run tenantd")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// A data directory with a user who is admin of each of `slugs` (named "<slug> Backup").
pub(crate) fn setup(slugs: &[&str]) -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    init_data_dir(dir);
    cli_ok(
        dir,
        &[
            "users",
            "create",
            "--email",
            EMAIL,
            "--name",
            "Owner",
            "--password",
            PASSWORD,
        ],
    );
    for slug in slugs {
        add_tenant(dir, slug);
    }
    data
}

fn add_tenant(dir: &Path, slug: &str) {
    let name = format!("{slug} Backup");
    cli_ok(dir, &["tenants", "create", slug, "--name", &name]);
    cli_ok(
        dir,
        &[
            "members", "add", "--tenant", slug, "--email", EMAIL, "--role", "admin",
        ],
    );
}

fn tenant_id(dir: &Path, slug: &str) -> String {
    let out = cli_ok(dir, &["tenants", "show", slug, "--json"]);
    json_of(&out)["id"].as_str().unwrap().to_string()
}

/// Backs `slug` up with the CLI: the file's path.
fn back_up(dir: &Path, slug: &str) -> PathBuf {
    let out = cli_ok(dir, &["backup", slug, "--json"]);
    let m = json_of(&out)["backups"][0].clone();
    assert_eq!(m["slug"], slug);
    dir.join("backups")
        .join(m["tenant_id"].as_str().unwrap())
        .join(m["file"].as_str().unwrap())
}

fn new_order(title: &str) -> Value {
    json!({"title": title, "customer_name": "B", "amount_minor": 1, "currency": "EUR"})
}

/// What a running server answers for the tenant: `GET /api/tenant` as its admin, after it
/// wrote an order there; the server is then killed (SIGKILL), so that its last writes stay
/// in the file's `-wal` (they are fewer than a checkpoint waits for).
fn served(dir: &Path, slug: &str) -> Value {
    let server = spawn_serve(dir, &[], 1);
    let auth = crate::support::bearer_on(server.addr, EMAIL, PASSWORD);
    let order = new_order("in the wal");
    let path = format!("/t/{slug}/api/orders");
    let made = request_to(
        server.addr,
        "POST",
        &path,
        &[("Authorization", &auth)],
        Some(&order),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    let reply = request_to(
        server.addr,
        "GET",
        &format!("/t/{slug}/api/tenant"),
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// The tenant file's integrity, `tenant_meta` name and number of orders, read as the server
/// would open it (a `-wal` beside it applied).
fn file_state(dir: &Path, id: &str) -> (String, String, i64) {
    let conn = rusqlite::Connection::open(dir.join("tenants").join(format!("{id}.db"))).unwrap();
    let one =
        |sql: &str| -> rusqlite::types::Value { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let text = |v| match v {
        rusqlite::types::Value::Text(t) => t,
        other => panic!("{other:?}"),
    };
    let check = text(one("PRAGMA integrity_check"));
    let name = text(one("SELECT value FROM tenant_meta WHERE key = 'name'"));
    let orders = match one("SELECT count(*) FROM orders") {
        rusqlite::types::Value::Integer(n) => n,
        other => panic!("{other:?}"),
    };
    (check, name, orders)
}

#[test]
fn a_restore_killed_at_any_step_leaves_the_old_file_or_the_new_one_whole_and_served() {
    let data = setup(&["acme"]);
    let dir = data.path();
    let id = tenant_id(dir, "acme");
    let file = back_up(dir, "acme");
    let from = file.to_str().unwrap();
    // Orders in the live file; the backup has none.
    let mut orders = 0;
    for (step, replaced) in [
        ("kept_aside", false),
        ("prepared", false),
        ("old_unwalled", false),
        ("renamed", true),
        ("synced", true),
    ] {
        let live = format!("Live before {step}");
        cli_ok(dir, &["tenants", "rename", "acme", "--name", &live]);
        // Served and written to, so that the file has writes in a -wal (the server is killed).
        assert_eq!(served(dir, "acme")["name"], live.as_str());
        orders += 1;
        let failpoint = format!("restore:{step}");
        let out = cli_env(
            dir,
            &["restore", "acme", "--from", from],
            &[("TENANTD_FAILPOINT", &failpoint)],
        );
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "{step}: {:?} {}",
            out.status,
            stderr(&out)
        );
        let name = if replaced {
            "acme Backup".to_string()
        } else {
            live.clone()
        };
        if replaced {
            // Nothing of the old file (its last writes were in its -wal) on the new one.
            orders = 0;
        }
        assert_eq!(
            file_state(dir, &id),
            ("ok".to_string(), name.clone(), orders),
            "killed at {step}"
        );
        let tenant = served(dir, "acme");
        orders += 1;
        assert_eq!(
            tenant["name"],
            name.as_str(),
            "served after a kill at {step}"
        );
        assert_eq!(tenant["id"], id.as_str());
    }
    // And once through: the backup's content, the replaced file kept and listed, and the
    // catalog's name, not the backup's, in the file.
    cli_ok(
        dir,
        &["tenants", "rename", "acme", "--name", "Live at last"],
    );
    let out = cli_ok(dir, &["restore", "acme", "--from", from, "--json"]);
    let restored = json_of(&out);
    let kept = restored["replaced"]["file"].as_str().unwrap().to_string();
    assert_eq!(
        file_state(dir, &id),
        ("ok".to_string(), "Live at last".to_string(), 0)
    );
    assert_eq!(served(dir, "acme")["name"], "Live at last");
    let list = json_of(&cli_ok(dir, &["backups", "list", "acme", "--json"]));
    let names: Vec<&str> = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["file"].as_str().unwrap())
        .collect();
    assert!(names.contains(&kept.as_str()), "{names:?}");
}

#[test]
fn a_restore_in_place_is_refused_while_a_server_runs_and_a_backup_is_not() {
    let data = setup(&["acme"]);
    let dir = data.path();
    let server = spawn_serve(dir, &[], 1);
    let file = back_up(dir, "acme");
    let out = cli_env(
        dir,
        &["restore", "acme", "--from", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("a tenantd server is running")
            && message.contains("POST /api/admin/tenants/acme/backups/restore"),
        "{message}"
    );
    drop(server);
    let out = cli_env(
        dir,
        &["restore", "acme", "--from", file.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_restore_refuses_a_foreign_corrupt_or_newer_file() {
    let data = setup(&["acme", "globex"]);
    let dir = data.path();
    let acme = tenant_id(dir, "acme");
    let a_file = back_up(dir, "acme");
    let g_file = back_up(dir, "globex");
    cli_ok(dir, &["tenants", "rename", "acme", "--name", "Untouched"]);
    let work = tempfile::tempdir().unwrap();
    let refused = |file: &Path, why: &str| {
        let out = cli_env(
            dir,
            &["restore", "acme", "--from", file.to_str().unwrap()],
            &[],
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: {}",
            file.display(),
            stderr(&out)
        );
        assert!(stderr(&out).contains(why), "{why}: {}", stderr(&out));
        let (check, name, _) = file_state(dir, &acme);
        assert_eq!((check.as_str(), name.as_str()), ("ok", "Untouched"));
    };
    // globex's file, with its own manifest beside it: whole, but not acme's.
    refused(&g_file, "belongs to tenant");
    // acme's file with a flipped byte in a copy (no manifest beside it): integrity_check.
    let bytes = std::fs::read(&a_file).unwrap();
    let corrupt = work.path().join("corrupt.db");
    std::fs::write(&corrupt, crate::backups::with_a_broken_index(&a_file)).unwrap();
    refused(&corrupt, "integrity_check");
    let mut flipped = bytes.clone();
    let at = flipped.len() - 100;
    flipped[at] ^= 0xff;
    // With its manifest beside it: the checksum.
    let mismatched = work.path().join("20260101T000000Z-000000.db");
    std::fs::write(&mismatched, &flipped).unwrap();
    std::fs::copy(
        a_file.with_extension("json"),
        mismatched.with_extension("json"),
    )
    .unwrap();
    refused(&mismatched, "SHA-256");
    // A newer schema than the binary's.
    let newer = work.path().join("newer.db");
    crate::backups::write_with_a_newer_schema(&newer, &bytes);
    refused(&newer, "newer than this binary");
    // A file that is not there, and no --from.
    refused(&work.path().join("missing.db"), "no backup");
    let out = cli_env(dir, &["restore", "acme"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn a_backup_restored_as_a_new_slug_is_a_clone_with_its_own_id_and_data() {
    let data = setup(&["acme"]);
    let dir = data.path();
    let acme = tenant_id(dir, "acme");
    let file = back_up(dir, "acme");
    // Beside a running server: a clone touches no file the server holds.
    let server = spawn_serve(dir, &[], 1);
    let out = cli_ok(
        dir,
        &[
            "restore",
            "acme",
            "--from",
            file.to_str().unwrap(),
            "--as",
            "acme-copy",
            "--json",
        ],
    );
    let clone = json_of(&out);
    let clone_id = clone["tenant_id"].as_str().unwrap().to_string();
    assert_ne!(clone_id, acme);
    assert_eq!(clone["slug"], "acme-copy");
    assert_eq!(tenant_id(dir, "acme-copy"), clone_id);
    cli_ok(
        dir,
        &[
            "members",
            "add",
            "--tenant",
            "acme-copy",
            "--email",
            EMAIL,
            "--role",
            "admin",
        ],
    );
    let auth = crate::support::bearer_on(server.addr, EMAIL, PASSWORD);
    let auth = [("Authorization", auth.as_str())];
    let get = |slug: &str, path: &str| {
        let reply = request_to(server.addr, "GET", &format!("/t/{slug}{path}"), &auth, None);
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    };
    let tenant = get("acme-copy", "/api/tenant");
    assert_eq!(tenant["id"], clone_id.as_str());
    assert_eq!(tenant["slug"], "acme-copy");
    assert_eq!(tenant["name"], "acme Backup");
    // Its own data from here on: an order in the clone is not in acme.
    let order = new_order("clone only");
    let made = request_to(
        server.addr,
        "POST",
        "/t/acme-copy/api/orders",
        &auth,
        Some(&order),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    assert_eq!(
        get("acme-copy", "/api/orders")["orders"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        get("acme", "/api/orders")["orders"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(get("acme", "/api/tenant")["id"], acme.as_str());
    // A taken slug is refused, and makes nothing.
    let out = cli_env(
        dir,
        &[
            "restore",
            "acme",
            "--from",
            file.to_str().unwrap(),
            "--as",
            "acme",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("taken"), "{}", stderr(&out));
}
