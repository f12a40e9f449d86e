//! `tenantd tenants exec`: one read-only query over tenants' files, with the real binary beside
//! a running server; each tenant's line holds only its own rows; writes, several statements and
//! bad SQL are refused before any tenant is touched, and nothing changes.

use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};

use crate::beside::{cli_ok, tenants_with_owner};
use crate::support::{request_to, spawn_serve};

const EMAIL: &str = "owner@exec.test";
const PASSWORD: &str = "exec-password-1";

fn exec(data: &Path, args: &[&str]) -> Output {
    crate::beside::cli(data, &[&["tenants", "exec"], args].concat())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Each stdout line parsed, by tenant slug, in the order printed.
fn lines(out: &Output) -> Vec<(String, Value)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a JSON line");
            (v["tenant"].as_str().expect("tenant").to_string(), v)
        })
        .collect()
}

fn tenant_file(data: &Path, slug: &str) -> std::path::PathBuf {
    let out = cli_ok(data, &["tenants", "show", slug, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    data.join("tenants")
        .join(format!("{}.db", v["id"].as_str().unwrap()))
}

/// The file's journal mode and its tenant_meta rows, read as the server would (its -wal
/// applied).
fn file_state(path: &Path) -> (String, Vec<(String, String)>) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let mut stmt = conn
        .prepare("SELECT key, value FROM tenant_meta ORDER BY key")
        .unwrap();
    let meta = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (mode, meta)
}

#[test]
fn exec_gives_each_tenant_its_own_rows_beside_a_running_server() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    tenants_with_owner(dir, EMAIL, PASSWORD, &["acme", "globex", "initech"]);
    let server = spawn_serve(dir, &[], 1);
    let login = request_to(
        server.addr,
        "POST",
        "/api/auth/login",
        &[],
        Some(&json!({"email": EMAIL, "password": PASSWORD})),
    );
    assert_eq!(login.status, 200, "{}", login.text());
    let auth = format!("Bearer {}", login.json()["token"].as_str().unwrap());
    let order =
        json!({"title": "acme only", "customer_name": "C", "amount_minor": 7, "currency": "EUR"});
    let made = request_to(
        server.addr,
        "POST",
        "/t/acme/api/orders",
        &[("Authorization", &auth)],
        Some(&order),
    );
    assert_eq!(made.status, 201, "{}", made.text());

    let sql = "SELECT title, amount_minor FROM orders ORDER BY id";
    let out = exec(dir, &["--all", sql]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = lines(&out);
    let slugs: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(slugs, ["acme", "globex", "initech"]);
    for (slug, line) in &got {
        let rows = line["rows"].as_array().expect("rows");
        if slug == "acme" {
            assert_eq!(rows, &[json!({"title": "acme only", "amount_minor": 7})]);
        } else {
            assert!(rows.is_empty(), "{slug}: {line}");
        }
        assert_eq!(
            tenant_file(dir, slug)
                .file_stem()
                .unwrap()
                .to_str()
                .unwrap(),
            line["tenant_id"].as_str().unwrap()
        );
    }
    // Only the named tenants, in the order named.
    let out = exec(dir, &["--tenant", "globex", "--tenant", "acme", sql]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = lines(&out);
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].0.as_str(), got[1].0.as_str()), ("globex", "acme"));
    assert_eq!(got[0].1["rows"], json!([]));
    assert_eq!(got[1].1["rows"][0]["title"], "acme only");
    // The files are untouched: still in WAL mode, and the server still serves them.
    assert_eq!(file_state(&tenant_file(dir, "acme")).0, "wal");
    let listed = request_to(
        server.addr,
        "GET",
        "/t/acme/api/orders",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(listed.status, 200, "{}", listed.text());
}

#[test]
fn exec_refuses_a_write_before_any_tenant_and_changes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    tenants_with_owner(dir, EMAIL, PASSWORD, &["acme", "globex"]);
    let files = [tenant_file(dir, "acme"), tenant_file(dir, "globex")];
    let before: Vec<_> = files.iter().map(|f| file_state(f)).collect();
    for (sql, why) in [
        (
            "INSERT INTO tenant_meta (key, value) VALUES ('x', 'y')",
            "would write",
        ),
        ("UPDATE tenant_meta SET value = 'z'", "would write"),
        ("DELETE FROM tenant_meta", "would write"),
        ("PRAGMA journal_mode = DELETE", "would write"),
        ("PRAGMA user_version = 7", "would write"),
        ("VACUUM", "would write"),
        ("CREATE TABLE t (x)", "would write"),
        ("SELECT 1; DELETE FROM tenant_meta", "one statement"),
        ("ATTACH 'other.db' AS other", "returns no rows"),
        ("BEGIN", "returns no rows"),
        ("   ", "empty"),
    ] {
        let out = exec(dir, &["--all", sql]);
        assert_eq!(out.status.code(), Some(1), "{sql}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("query refused"),
            "{sql}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(why), "{sql}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{sql}: ran on a tenant");
    }
    let after: Vec<_> = files.iter().map(|f| file_state(f)).collect();
    assert_eq!(before, after);
    assert_eq!(after[0].0, "wal");
}

#[test]
fn exec_reports_bad_sql_and_failing_tenants_clearly() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    tenants_with_owner(dir, EMAIL, PASSWORD, &["acme", "globex"]);
    for (sql, why) in [
        ("SELEC 1", "syntax error"),
        (
            "SELECT * FROM no_such_table",
            "no such table: no_such_table",
        ),
    ] {
        let out = exec(dir, &["--all", sql]);
        assert_eq!(out.status.code(), Some(1), "{sql}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{sql}: {}", stderr(&out));
        assert!(out.stdout.is_empty());
    }
    // The command line: an unknown tenant, and neither or both of --all and --tenant.
    let out = exec(dir, &["--tenant", "nope", "SELECT 1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
    for args in [
        &["SELECT 1"][..],
        &["--all", "--tenant", "acme", "SELECT 1"],
    ] {
        let out = exec(dir, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    // A tenant whose file is gone fails alone, on its own line; the others answer.
    let globex = tenant_file(dir, "globex");
    std::fs::remove_file(&globex).unwrap();
    let _ = std::fs::remove_file(globex.with_extension("db-wal"));
    let _ = std::fs::remove_file(globex.with_extension("db-shm"));
    let out = exec(
        dir,
        &["--all", "SELECT value FROM tenant_meta WHERE key = 'slug'"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("failed on 1 of 2"),
        "{}",
        stderr(&out)
    );
    let got = lines(&out);
    assert_eq!(got[0].1["rows"], json!([{"value": "acme"}]));
    assert_eq!(got[1].0, "globex");
    assert!(
        got[1].1["error"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{}",
        got[1].1
    );
}
