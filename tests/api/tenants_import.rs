//! `tenantd tenants import`: a tenant database file from elsewhere, or an export archive, becomes
//! a new tenant with its own id, served beside a running server and isolated from the tenant it
//! came from; a corrupt, newer or foreign file or archive is refused and leaves no catalog row
//! and no file behind.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

use crate::beside::{cli, cli_ok, tenants_with_owner};
use crate::support::{request_to, spawn_serve};

const EMAIL: &str = "owner@import.test";
const PASSWORD: &str = "import-password-1";

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A backup of `slug` made by the CLI: a tenant file as another install would hand it over.
fn backup_file(dir: &Path, slug: &str) -> PathBuf {
    let m = json_of(&cli_ok(dir, &["backup", slug, "--json"]))["backups"][0].clone();
    dir.join("backups")
        .join(m["tenant_id"].as_str().unwrap())
        .join(m["file"].as_str().unwrap())
}

fn write_zip(path: &Path, entries: &BTreeMap<String, String>) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, text) in entries {
        zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    zip.finish().unwrap();
}

/// One request to the running server with `auth`; the status must be `want`.
fn call(
    addr: std::net::SocketAddr,
    auth: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    want: u16,
) -> Value {
    let reply = request_to(
        addr,
        method,
        path,
        &[("Authorization", auth)],
        body.as_ref(),
    );
    assert_eq!(reply.status, want, "{method} {path}: {}", reply.text());
    reply.json()
}

fn add_order(addr: std::net::SocketAddr, auth: &str, slug: &str, title: &str) -> Value {
    let order = json!({"title": title, "customer_name": "C", "amount_minor": 3, "currency": "EUR"});
    let path = format!("/t/{slug}/api/orders");
    call(addr, auth, "POST", &path, Some(order), 201)
}

fn titles(addr: std::net::SocketAddr, auth: &str, slug: &str) -> Vec<String> {
    let path = format!("/t/{slug}/api/orders");
    let mut titles: Vec<String> = call(addr, auth, "GET", &path, None, 200)["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["title"].as_str().unwrap().to_string())
        .collect();
    titles.sort();
    titles
}

/// Imports `from` as `slug` (with `extra` options) and makes `email` its admin: its record.
fn import(dir: &Path, slug: &str, from: &Path, extra: &[&str], email: &str) -> Value {
    let mut args = vec![
        "tenants",
        "import",
        slug,
        "--from",
        from.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let record = json_of(&cli_ok(dir, &args));
    assert_eq!(
        (record["slug"].as_str(), record["status"].as_str()),
        (Some(slug), Some("active"))
    );
    cli_ok(
        dir,
        &[
            "members", "add", "--tenant", slug, "--email", email, "--role", "admin",
        ],
    );
    record
}

#[test]
fn an_imported_file_is_a_new_tenant_with_its_own_id_serving_its_data() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    tenants_with_owner(dir, EMAIL, PASSWORD, &["acme"]);
    let acme = json_of(&cli_ok(dir, &["tenants", "show", "acme", "--json"]))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let server = spawn_serve(dir, &[], 1);
    let addr = server.addr;
    let auth = crate::support::bearer_on(addr, EMAIL, PASSWORD);
    add_order(addr, &auth, "acme", "made in acme");
    let file = backup_file(dir, "acme");
    let archive = dir.join("acme-export.zip");
    cli_ok(dir, &["export", "acme", "--to", archive.to_str().unwrap()]);

    // Beside the running server.
    let record = import(dir, "newco", &file, &["--name", "New Co"], EMAIL);
    let id = record["id"].as_str().unwrap().to_string();
    assert_ne!(id, acme);
    let tenant = call(addr, &auth, "GET", "/t/newco/api/tenant", None, 200);
    assert_eq!(tenant["id"], id.as_str());
    assert_eq!(tenant["slug"], "newco");
    assert_eq!(tenant["name"], "New Co");
    assert_eq!(titles(addr, &auth, "newco"), ["made in acme"]);
    // Its own data from here on, and acme's members who are not its members get nothing.
    add_order(addr, &auth, "newco", "made in newco");
    assert_eq!(
        titles(addr, &auth, "newco"),
        ["made in acme", "made in newco"]
    );
    assert_eq!(titles(addr, &auth, "acme"), ["made in acme"]);
    let outsider = "acme-only@import.test";
    cli_ok(
        dir,
        &[
            "users",
            "create",
            "--email",
            outsider,
            "--name",
            "A",
            "--password",
            PASSWORD,
        ],
    );
    cli_ok(
        dir,
        &[
            "members", "add", "--tenant", "acme", "--email", outsider, "--role", "admin",
        ],
    );
    let outsider = crate::support::bearer_on(addr, outsider, PASSWORD);
    call(addr, &outsider, "GET", "/t/newco/api/orders", None, 403);

    // The export archive, rebuilt: the same data under another new id.
    let record = import(dir, "fromzip", &archive, &[], EMAIL);
    let zip_id = record["id"].as_str().unwrap().to_string();
    assert!(zip_id != acme && zip_id != id);
    assert_eq!(record["name"], "acme", "the name the archive's file holds");
    let tenant = call(addr, &auth, "GET", "/t/fromzip/api/tenant", None, 200);
    assert_eq!(tenant["id"], zip_id.as_str());
    assert_eq!(titles(addr, &auth, "fromzip"), ["made in acme"]);
    // The order counter came along: the next order is numbered after the archive's.
    let made = add_order(addr, &auth, "fromzip", "made in fromzip");
    assert_eq!(made["number"], "ORD-000002", "{made}");
    assert_eq!(titles(addr, &auth, "acme"), ["made in acme"]);
    assert!(import_leftovers(dir).is_empty());
}

fn import_leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("import-"))
        .collect()
}

#[test]
fn a_corrupt_newer_or_foreign_file_is_refused_and_leaves_nothing_behind() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    tenants_with_owner(dir, EMAIL, PASSWORD, &["acme"]);
    let good = backup_file(dir, "acme");
    let work = tempfile::tempdir().unwrap();
    let corrupt = work.path().join("corrupt.db");
    std::fs::write(&corrupt, crate::backups::with_a_broken_index(&good)).unwrap();
    let newer = work.path().join("newer.db");
    crate::backups::write_with_a_newer_schema(&newer, &std::fs::read(&good).unwrap());
    // Sound and of a known version, but one of its migrations is not this binary's: refused
    // only when the copy is migrated, after its catalog row and file were made.
    let altered_migration = work.path().join("altered.db");
    std::fs::copy(&good, &altered_migration).unwrap();
    let conn = rusqlite::Connection::open(&altered_migration).unwrap();
    conn.execute(
        "UPDATE schema_migrations SET checksum = 'x' WHERE version = 1",
        [],
    )
    .unwrap();
    drop(conn);
    let text = work.path().join("notes.db");
    std::fs::write(&text, "not a database at all\n".repeat(200)).unwrap();
    // A sound SQLite file that is not a tenant's.
    let foreign = work.path().join("foreign.db");
    let conn = rusqlite::Connection::open(&foreign).unwrap();
    conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(conn);
    let not_zip = work.path().join("acme.zip");
    std::fs::write(&not_zip, b"PK\x03\x04").unwrap();
    let export = work.path().join("export.zip");
    cli_ok(dir, &["export", "acme", "--to", export.to_str().unwrap()]);
    let entries = crate::export::unzip(&std::fs::read(&export).unwrap());
    let altered = |name: &str, change: &dyn Fn(&mut BTreeMap<String, String>)| {
        let mut copy = entries.clone();
        change(&mut copy);
        let path = work.path().join(name);
        write_zip(&path, &copy);
        path
    };
    let newer_zip = altered("newer.zip", &|e| {
        let mut m: Value = serde_json::from_str(&e["manifest.json"]).unwrap();
        m["schema_version"] = json!(9999);
        e.insert("manifest.json".into(), m.to_string());
    });
    let no_manifest = altered("bare.zip", &|e| {
        e.remove("manifest.json");
    });
    let unknown_table = altered("table.zip", &|e| {
        e.insert("tables/evil.jsonl".into(), "{\"x\": 1}\n".into());
    });
    let unknown_column = altered("column.zip", &|e| {
        e.insert(
            "tables/counters.jsonl".into(),
            "{\"name\": \"x\", \"value\": 1, \"evil\": 2}\n".into(),
        );
    });
    let dangling = altered("dangling.zip", &|e| {
        e.insert(
            "tables/chat_participants.jsonl".into(),
            "{\"chat_id\": 42, \"user_id\": 1, \"joined_at\": \"2026-01-01T00:00:00Z\", \"last_read_message_id\": null}\n".into(),
        );
    });
    // A row line past the bound is refused as it is read, not held whole first.
    let endless = altered("endless.zip", &|e| {
        e.insert("tables/counters.jsonl".into(), " ".repeat((16 << 20) + 1));
    });

    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("tenants"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let files_before = listing();
    let tenants_before = json_of(&cli_ok(dir, &["tenants", "list", "--json"]));
    for (file, why) in [
        (&corrupt, "integrity_check"),
        (&newer, "newer than this binary"),
        (&altered_migration, "changed after it was applied"),
        (&text, "not a database"),
        (&foreign, "not a tenant database"),
        (&not_zip, "not a zip archive"),
        (&newer_zip, "newer than this binary"),
        (&no_manifest, "no manifest.json"),
        (&unknown_table, "no table evil"),
        (&unknown_column, "no column evil"),
        (&dangling, "refer to rows the archive does not hold"),
        (&endless, "longer than 16 MiB"),
        (&work.path().join("missing.db"), "no such file"),
    ] {
        let out = cli(
            dir,
            &[
                "tenants",
                "import",
                "newco",
                "--from",
                file.to_str().unwrap(),
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: {}",
            file.display(),
            stderr(&out)
        );
        assert!(stderr(&out).contains(why), "{why}: {}", stderr(&out));
        assert_eq!(listing(), files_before, "{}", file.display());
        assert!(
            !std::fs::read_dir(dir).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("import-")),
            "{}",
            file.display()
        );
        assert_eq!(
            json_of(&cli_ok(dir, &["tenants", "list", "--json"])),
            tenants_before,
            "{}",
            file.display()
        );
    }
    // A taken slug: refused, and acme is left as it was.
    let out = cli(
        dir,
        &[
            "tenants",
            "import",
            "acme",
            "--from",
            good.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("taken"), "{}", stderr(&out));
    assert_eq!(listing(), files_before);
    // No --from: a usage error.
    let out = cli(dir, &["tenants", "import", "newco"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
