//! The sqld client (`tenantd::sqld`) against the real libSQL server: namespaces kept apart,
//! values that come back as they went, interactive `BEGIN IMMEDIATE` transactions and what
//! sqld does with two writers, each kind of failure as its own error, and the embedded
//! migrations run over the wire. Skipped without `SQLD_BIN` (failed under `CI=true`).

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use tenantd::db::{central_migrations, tenant_migrations, Migration};
use tenantd::sqld::{Client, SqldError, Statement, Transaction, Value};

use crate::sqld_support::{spawn_sqld, spawn_sqld_with};

fn count(client: &Client, ns: &str, table: &str) -> i64 {
    client
        .execute(ns, &format!("SELECT count(*) FROM {table}"), &[])
        .unwrap()
        .first_value()
        .and_then(Value::as_i64)
        .unwrap()
}

fn texts(client: &Client, ns: &str, sql: &str) -> Vec<String> {
    client
        .execute(ns, sql, &[])
        .unwrap()
        .rows
        .iter()
        .map(|row| row[0].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn sqld_namespaces_are_isolated() {
    let Some(sqld) = spawn_sqld() else { return };
    let client = sqld.client();
    client.create_namespace("alpha").unwrap();
    client.create_namespace("beta").unwrap();

    client
        .execute("alpha", "CREATE TABLE notes (body TEXT)", &[])
        .unwrap();
    client
        .execute("alpha", "INSERT INTO notes VALUES (?)", &["alpha's".into()])
        .unwrap();
    // The table made in alpha is not in beta.
    let err = client
        .execute("beta", "SELECT * FROM notes", &[])
        .unwrap_err();
    assert!(
        matches!(&err, SqldError::Sql { message, .. } if message.contains("no such table")),
        "{err}"
    );

    // The same table in both: each request sees only its own namespace's rows, with or
    // without a transaction.
    client
        .execute("beta", "CREATE TABLE notes (body TEXT)", &[])
        .unwrap();
    client
        .execute("beta", "INSERT INTO notes VALUES (?)", &["beta's".into()])
        .unwrap();
    assert_eq!(
        texts(&client, "alpha", "SELECT body FROM notes"),
        ["alpha's"]
    );
    assert_eq!(texts(&client, "beta", "SELECT body FROM notes"), ["beta's"]);
    let mut tx = client.begin_immediate("beta").unwrap();
    let rows = tx.execute("SELECT body FROM notes", &[]).unwrap();
    assert_eq!(rows.rows, [[Value::Text("beta's".into())]]);
    tx.execute("DELETE FROM notes", &[]).unwrap();
    tx.commit().unwrap();
    assert_eq!(count(&client, "beta", "notes"), 0);
    assert_eq!(count(&client, "alpha", "notes"), 1);
}

#[test]
fn sqld_values_round_trip() {
    let Some(sqld) = spawn_sqld() else { return };
    let client = sqld.client();
    client.create_namespace("values").unwrap();
    client
        .execute("values", "CREATE TABLE v (id INTEGER PRIMARY KEY, x)", &[])
        .unwrap();
    let values = [
        Value::Null,
        Value::Integer(0),
        Value::Integer(-1),
        Value::Integer(i64::MIN),
        Value::Integer(i64::MAX),
        Value::Integer(1 << 53 | 1), // past what a JSON number holds exactly
        Value::Real(0.1),
        Value::Real(-2.5e300),
        Value::Real(f64::MIN_POSITIVE),
        Value::Real(-0.0),
        Value::Text(String::new()),
        Value::Text("Zoë, 東京, 😀, \"quoted\" \\ and a NUL:\0 inside".into()),
        Value::Blob(Vec::new()),
        Value::Blob((0..=255).collect()),
    ];
    for (i, v) in values.iter().enumerate() {
        let rows = client
            .execute(
                "values",
                "INSERT INTO v (id, x) VALUES (?, ?)",
                &[Value::Integer(i as i64 + 1), v.clone()],
            )
            .unwrap();
        assert_eq!(rows.affected_row_count, 1);
        assert_eq!(rows.last_insert_rowid, Some(i as i64 + 1));
    }
    let rows = client
        .execute("values", "SELECT x, typeof(x) FROM v ORDER BY id", &[])
        .unwrap();
    assert_eq!(rows.columns, ["x", "typeof(x)"]);
    let back: Vec<Value> = rows.rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(back, values);
    let kinds: Vec<&str> = rows.rows.iter().map(|r| r[1].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "null", "integer", "integer", "integer", "integer", "integer", "real", "real", "real",
            "real", "text", "text", "blob", "blob"
        ]
    );
    // -0.0 == 0.0 for PartialEq: its sign survived too.
    assert!(back[9].as_f64().unwrap().is_sign_negative());
    // A bound argument comes back untouched without a table.
    for v in &values {
        let rows = client
            .execute("values", "SELECT ?", std::slice::from_ref(v))
            .unwrap();
        assert_eq!(rows.first_value(), Some(v));
    }
    // What JSON cannot carry is refused before anything is sent.
    let err = client
        .execute("values", "SELECT ?", &[Value::Real(f64::INFINITY)])
        .unwrap_err();
    assert!(matches!(err, SqldError::BadArgument(_)), "{err}");
}

#[test]
fn sqld_transactions_commit_roll_back_and_roll_back_when_dropped() {
    let Some(sqld) = spawn_sqld() else { return };
    let client = sqld.client();
    client.create_namespace("tx").unwrap();
    client
        .execute("tx", "CREATE TABLE t (x INTEGER NOT NULL)", &[])
        .unwrap();

    let mut tx = client.begin_immediate("tx").unwrap();
    assert_eq!(tx.namespace(), "tx");
    tx.execute("INSERT INTO t VALUES (1)", &[]).unwrap();
    // Its own write is visible inside, not outside, until it commits.
    let inside = tx.execute("SELECT count(*) FROM t", &[]).unwrap();
    assert_eq!(inside.first_value(), Some(&Value::Integer(1)));
    assert_eq!(count(&client, "tx", "t"), 0);
    tx.commit().unwrap();
    assert_eq!(count(&client, "tx", "t"), 1);

    let mut tx = client.begin_immediate("tx").unwrap();
    tx.execute("INSERT INTO t VALUES (2)", &[]).unwrap();
    tx.rollback().unwrap();
    assert_eq!(count(&client, "tx", "t"), 1);

    // A SQL error inside leaves the transaction open, as in SQLite: the rest still commits.
    let mut tx = client.begin_immediate("tx").unwrap();
    tx.execute("INSERT INTO t VALUES (3)", &[]).unwrap();
    let err = tx.execute("INSERT INTO t VALUES (NULL)", &[]).unwrap_err();
    assert!(matches!(err, SqldError::Sql { .. }), "{err}");
    tx.commit().unwrap();
    assert_eq!(count(&client, "tx", "t"), 2);

    // Dropped without either: rolled back, and the write lock is free again at once (a
    // writer still holding it would keep the next BEGIN IMMEDIATE waiting for seconds,
    // then sqld would roll the holder back: the row would be gone either way, so the
    // lock is checked through the next transaction's commit).
    {
        let mut tx = client.begin_immediate("tx").unwrap();
        tx.execute("INSERT INTO t VALUES (4)", &[]).unwrap();
    }
    assert_eq!(count(&client, "tx", "t"), 2);
    let mut tx = client.begin_immediate("tx").unwrap();
    tx.execute("INSERT INTO t VALUES (5)", &[]).unwrap();
    tx.commit().unwrap();
    assert_eq!(count(&client, "tx", "t"), 3);

    // A transaction's statement that ends it (COMMIT by hand) is reported, not ignored.
    let mut tx = client.begin_immediate("tx").unwrap();
    let err = tx.execute("COMMIT", &[]).unwrap_err();
    assert!(matches!(err, SqldError::TransactionEnded(_)), "{err}");
    let err = tx.execute("SELECT 1", &[]).unwrap_err();
    assert!(matches!(err, SqldError::TransactionEnded(_)), "{err}");
}

#[test]
fn sqld_concurrent_writers_serialize() {
    let Some(sqld) = spawn_sqld() else { return };
    let client = sqld.client();
    client.create_namespace("writers").unwrap();
    client
        .execute("writers", "CREATE TABLE t (who TEXT)", &[])
        .unwrap();

    let mut first = client.begin_immediate("writers").unwrap();
    first
        .execute("INSERT INTO t VALUES ('first')", &[])
        .unwrap();
    let (ready, started) = mpsc::channel();
    let second = {
        let client = client.clone();
        thread::spawn(move || {
            ready.send(()).unwrap();
            // Waits inside sqld for the first writer's lock.
            let mut tx = client.begin_immediate("writers").unwrap();
            let seen = tx.execute("SELECT who FROM t", &[]).unwrap();
            tx.execute("INSERT INTO t VALUES ('second')", &[]).unwrap();
            tx.commit().unwrap();
            seen.rows
        })
    };
    started.recv().unwrap();
    // Give the second writer time to reach sqld while the first holds the lock (whether
    // it did or not, what it saw must include the first's commit).
    thread::sleep(Duration::from_millis(300));
    first
        .execute("INSERT INTO t VALUES ('first again')", &[])
        .unwrap();
    first.commit().unwrap();
    let seen = second.join().unwrap();
    assert_eq!(
        seen,
        [
            [Value::Text("first".into())],
            [Value::Text("first again".into())]
        ]
    );
    assert_eq!(count(&client, "writers", "t"), 3);
}

/// What sqld does to a writer that holds the lock idle while another waits: after its
/// transaction timeout (5 s by default) it rolls the holder back and lets the waiter in; the
/// holder's next statement finds its transaction gone, and nothing of it was committed.
#[test]
fn sqld_rolls_back_an_idle_lock_holder_for_a_waiting_writer() {
    let Some(sqld) = spawn_sqld() else { return };
    let client = sqld.client();
    client.create_namespace("steal").unwrap();
    client
        .execute("steal", "CREATE TABLE t (who TEXT)", &[])
        .unwrap();

    let mut idle = client.begin_immediate("steal").unwrap();
    idle.execute("INSERT INTO t VALUES ('idle')", &[]).unwrap();
    let waiter = {
        let client = client.clone();
        thread::spawn(move || {
            let mut tx = client.begin_immediate("steal").unwrap();
            tx.execute("INSERT INTO t VALUES ('waiter')", &[]).unwrap();
            tx.commit().unwrap();
        })
    };
    waiter.join().unwrap();
    let err = idle
        .execute("INSERT INTO t VALUES ('idle, later')", &[])
        .unwrap_err();
    assert!(matches!(err, SqldError::TransactionEnded(_)), "{err}");
    assert_eq!(texts(&client, "steal", "SELECT who FROM t"), ["waiter"]);
    let err = idle.commit().unwrap_err();
    assert!(matches!(err, SqldError::TransactionEnded(_)), "{err}");
}

#[test]
fn sqld_errors_say_what_failed() {
    let Some(mut sqld) = spawn_sqld() else { return };
    let client = sqld.client();
    client.create_namespace("errors").unwrap();
    client
        .execute("errors", "CREATE TABLE t (x INTEGER PRIMARY KEY)", &[])
        .unwrap();

    // SQL errors, with sqld's code.
    let err = client
        .execute("errors", "SELECT * FROM nope", &[])
        .unwrap_err();
    assert!(
        matches!(&err, SqldError::Sql { message, .. } if message.contains("no such table: nope")),
        "{err}"
    );
    let err = client.execute("errors", "SELEC 1", &[]).unwrap_err();
    assert_eq!(err.sql_code(), Some("SQL_PARSE_ERROR"), "{err}");
    let err = client
        .execute("errors", "SELECT 1; SELECT 2", &[])
        .unwrap_err();
    assert_eq!(err.sql_code(), Some("SQL_MANY_STATEMENTS"), "{err}");
    client
        .execute("errors", "INSERT INTO t VALUES (1)", &[])
        .unwrap();
    let err = client
        .execute("errors", "INSERT INTO t VALUES (1)", &[])
        .unwrap_err();
    assert!(
        matches!(&err, SqldError::Sql { message, .. } if message.contains("UNIQUE")),
        "{err}"
    );
    let err = client.execute("errors", "SELECT ?", &[]).unwrap_err();
    assert!(matches!(err, SqldError::Sql { .. }), "{err}");

    // A namespace never created, a bad name, an existing one created again.
    let err = client.execute("nobody", "SELECT 1", &[]).unwrap_err();
    assert!(
        matches!(&err, SqldError::NamespaceMissing(ns) if ns == "nobody"),
        "{err}"
    );
    let err = client.begin_immediate("nobody").err().unwrap();
    assert!(matches!(err, SqldError::NamespaceMissing(_)), "{err}");
    let err = client.execute("../errors", "SELECT 1", &[]).unwrap_err();
    assert!(matches!(err, SqldError::BadNamespace(_)), "{err}");
    let err = client.create_namespace("errors").unwrap_err();
    assert!(
        matches!(&err, SqldError::NamespaceExists(ns) if ns == "errors"),
        "{err}"
    );

    // The server forgets its streams when it restarts: a transaction's next request is
    // refused (its baton is unknown) and says its stream ended.
    let mut tx = client.begin_immediate("errors").unwrap();
    tx.execute("INSERT INTO t VALUES (2)", &[]).unwrap();
    sqld.restart();
    let err = tx.execute("INSERT INTO t VALUES (3)", &[]).unwrap_err();
    assert!(
        matches!(
            err,
            SqldError::StreamEnded {
                status: Some(400),
                ..
            }
        ),
        "{err}"
    );
    let err = tx.commit().unwrap_err();
    assert!(matches!(err, SqldError::StreamEnded { .. }), "{err}");
    assert_eq!(count(&client, "errors", "t"), 1);

    // A server that is not there.
    drop(sqld);
    let err = client.execute("errors", "SELECT 1", &[]).unwrap_err();
    assert!(matches!(err, SqldError::Transport(_)), "{err}");
}

#[test]
fn sqld_deleted_namespace_is_missing() {
    let Some(sqld) = spawn_sqld() else { return };
    let client = sqld.client();
    assert!(!client.namespace_exists("gone").unwrap());
    client.create_namespace("gone").unwrap();
    assert!(client.namespace_exists("gone").unwrap());
    client.execute("gone", "CREATE TABLE t (x)", &[]).unwrap();
    let mut open = client.begin_immediate("gone").unwrap();
    open.execute("INSERT INTO t VALUES (1)", &[]).unwrap();

    client.delete_namespace("gone").unwrap();
    assert!(!client.namespace_exists("gone").unwrap());
    let err = client.execute("gone", "SELECT 1", &[]).unwrap_err();
    assert!(
        matches!(&err, SqldError::NamespaceMissing(ns) if ns == "gone"),
        "{err}"
    );
    // A transaction open on it when it went.
    let err = open.execute("SELECT 1", &[]).unwrap_err();
    assert!(matches!(err, SqldError::NamespaceMissing(_)), "{err}");
    let err = client.delete_namespace("gone").unwrap_err();
    assert!(matches!(err, SqldError::NamespaceMissing(_)), "{err}");

    // Created again, it starts empty.
    client.create_namespace("gone").unwrap();
    let err = client.execute("gone", "SELECT * FROM t", &[]).unwrap_err();
    assert!(matches!(err, SqldError::Sql { .. }), "{err}");
}

#[test]
fn sqld_batch_is_all_or_nothing_in_one_round_trip() {
    let Some(sqld) = spawn_sqld() else { return };
    let client = sqld.client();
    client.create_namespace("batch").unwrap();
    let results = client
        .batch(
            "batch",
            &[
                Statement::new("CREATE TABLE t (x INTEGER PRIMARY KEY)", &[]),
                Statement::new("INSERT INTO t VALUES (?)", &[1.into()]),
                Statement::new("INSERT INTO t VALUES (?)", &[2.into()]),
                Statement::new("SELECT x FROM t ORDER BY x", &[]),
            ],
        )
        .unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[2].last_insert_rowid, Some(2));
    assert_eq!(results[3].rows, [[Value::Integer(1)], [Value::Integer(2)]]);

    let err = client
        .batch(
            "batch",
            &[
                Statement::new("INSERT INTO t VALUES (?)", &[3.into()]),
                Statement::new("INSERT INTO t VALUES (?)", &[1.into()]),
                Statement::new("INSERT INTO t VALUES (?)", &[4.into()]),
            ],
        )
        .unwrap_err();
    assert!(
        matches!(&err, SqldError::Sql { message, .. } if message.contains("UNIQUE")),
        "{err}"
    );
    assert_eq!(count(&client, "batch", "t"), 2);
    // And the lock was let go: the next write goes through.
    client
        .execute("batch", "INSERT INTO t VALUES (5)", &[])
        .unwrap();
    assert_eq!(count(&client, "batch", "t"), 3);
}

/// What `db::migrate` does for one migration, over the client: `BEGIN IMMEDIATE` (foreign keys
/// off first when the file asks), the file as a script, the foreign key check, the row.
fn migrate_over_sqld(client: &Client, ns: &str, migrations: &[Migration]) {
    client
        .execute_script(
            ns,
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY, name TEXT NOT NULL,
                checksum TEXT NOT NULL, applied_at TEXT NOT NULL)",
        )
        .unwrap();
    for m in migrations {
        let keys_off = m.sql.starts_with("-- foreign_keys: off");
        let setup: &[&str] = if keys_off {
            &["PRAGMA foreign_keys = OFF"]
        } else {
            &[]
        };
        let mut tx: Transaction = client
            .begin_immediate_after(ns, setup)
            .unwrap_or_else(|e| panic!("{}: begin: {e}", m.file));
        tx.execute_script(&m.sql)
            .unwrap_or_else(|e| panic!("{} refused by sqld: {e}", m.file));
        if keys_off {
            let broken = tx.execute("PRAGMA foreign_key_check", &[]).unwrap();
            assert!(broken.rows.is_empty(), "{}: {:?}", m.file, broken.rows);
        }
        tx.execute(
            "INSERT INTO schema_migrations VALUES (?, ?, ?, '2026-01-01T00:00:00.000Z')",
            &[
                m.version.into(),
                m.name.as_str().into(),
                m.checksum.as_str().into(),
            ],
        )
        .unwrap();
        tx.commit().unwrap();
    }
}

#[test]
fn sqld_runs_the_embedded_migrations() {
    let Some(sqld) = spawn_sqld() else { return };
    let client = sqld.client();
    for (ns, migrations) in [
        ("tenant", tenant_migrations()),
        ("central", central_migrations()),
    ] {
        client.create_namespace(ns).unwrap();
        migrate_over_sqld(&client, ns, migrations);
        let versions = client
            .execute(ns, "SELECT max(version) FROM schema_migrations", &[])
            .unwrap();
        assert_eq!(
            versions.first_value(),
            Some(&Value::Integer(migrations.last().unwrap().version.into()))
        );
        // The same tables as a local file migrated by db::migrate.
        let local = tempfile::tempdir().unwrap();
        let mut conn = rusqlite::Connection::open(local.path().join("x.db")).unwrap();
        tenantd::db::migrate(&mut conn, migrations).unwrap();
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name")
            .unwrap();
        let local_names: Vec<String> = stmt
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let remote_names = texts(
            &client,
            ns,
            "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'
             AND name NOT LIKE 'libsql_%' ORDER BY name",
        );
        assert_eq!(remote_names, local_names, "{ns}");
    }
    // Foreign keys are on in sqld's connections, as db::init sets them locally.
    let keys = client
        .execute("tenant", "PRAGMA foreign_keys", &[])
        .unwrap();
    assert_eq!(keys.first_value(), Some(&Value::Integer(1)));
}

#[test]
fn sqld_admin_key_is_sent_to_the_admin_api() {
    let Some(sqld) = spawn_sqld_with(&["--admin-auth-key", "admin-key-1"]) else {
        return;
    };
    let err = sqld.client().create_namespace("keyed").unwrap_err();
    assert!(matches!(err, SqldError::Http { status: 401, .. }), "{err}");
    let mut config = sqld.config();
    config.admin_auth_key = Some("wrong-key".into());
    let err = Client::new(config)
        .unwrap()
        .create_namespace("keyed")
        .unwrap_err();
    assert!(matches!(err, SqldError::Http { status: 401, .. }), "{err}");

    let mut config = sqld.config();
    config.admin_auth_key = Some("admin-key-1".into());
    let client = Client::new(config).unwrap();
    client.create_namespace("keyed").unwrap();
    assert!(client.namespace_exists("keyed").unwrap());
    // The admin key is not the Hrana API's concern: statements need no credentials here.
    client.execute("keyed", "SELECT 1", &[]).unwrap();
    client.delete_namespace("keyed").unwrap();
}

/// sqld keeps at most `--max-active-namespaces` open and evicts the rest; this build answers
/// "doesn't exist" to a few requests for a namespace it is evicting and loading again (about
/// 2% of them with 300 namespaces over 100 active). The statement never ran, and the client
/// asks again before it reports `NamespaceMissing`.
#[test]
fn sqld_namespaces_beyond_the_active_ones_answer() {
    let Some(sqld) = spawn_sqld_with(&["--max-active-namespaces", "8"]) else {
        return;
    };
    let client = sqld.client();
    let names: Vec<String> = (0..120).map(|i| format!("many-{i}")).collect();
    for ns in &names {
        client.create_namespace(ns).unwrap();
        client.execute(ns, "CREATE TABLE t (ns TEXT)", &[]).unwrap();
        client
            .execute(ns, "INSERT INTO t VALUES (?)", &[ns.as_str().into()])
            .unwrap();
    }
    for _ in 0..3 {
        for ns in &names {
            let rows = client
                .execute(ns, "SELECT ns FROM t", &[])
                .unwrap_or_else(|e| panic!("{ns}: {e}"));
            assert_eq!(rows.rows, [[Value::Text(ns.clone())]]);
        }
    }
}

/// Autocommit statements reuse streams kept open per namespace: a stream never serves another
/// namespace, one the server dropped (a restart) is replaced without the caller seeing it, and
/// one a statement left inside a transaction is never handed out again.
#[test]
fn sqld_kept_streams_stay_with_their_namespace_survive_a_restart_and_never_carry_a_transaction() {
    let Some(mut sqld) = spawn_sqld() else {
        return;
    };
    let mut config = sqld.config();
    config.keep_streams = vec!["ns-a".into(), "ns-b".into()];
    let client = Client::new(config).unwrap();
    for ns in ["ns-a", "ns-b"] {
        client.create_namespace(ns).unwrap();
        client.execute(ns, "CREATE TABLE t (v TEXT)", &[]).unwrap();
    }
    for i in 0..20 {
        let ns = if i % 2 == 0 { "ns-a" } else { "ns-b" };
        client
            .execute(ns, "INSERT INTO t (v) VALUES (?1)", &[ns.into()])
            .unwrap();
    }
    assert_eq!(texts(&client, "ns-a", "SELECT DISTINCT v FROM t"), ["ns-a"]);
    assert_eq!(texts(&client, "ns-b", "SELECT DISTINCT v FROM t"), ["ns-b"]);

    // Many threads at once: more than the streams kept, each statement answered (the ones
    // past the kept streams close theirs, so the server never runs out of connections).
    let handles: Vec<_> = (0..24)
        .map(|_| {
            let client = client.clone();
            thread::spawn(move || {
                for _ in 0..25 {
                    assert_eq!(count(&client, "ns-a", "t"), 10);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }

    // The kept streams die with the server; the next statements do not notice.
    sqld.restart();
    assert_eq!(count(&client, "ns-a", "t"), 10);
    assert_eq!(count(&client, "ns-b", "t"), 10);

    // A statement that begins a transaction: its stream is not kept, so what follows commits
    // on its own and another client sees it.
    client.execute("ns-a", "BEGIN", &[]).unwrap();
    client
        .execute("ns-a", "INSERT INTO t (v) VALUES ('after')", &[])
        .unwrap();
    let other = sqld.client();
    assert_eq!(count(&other, "ns-a", "t"), 11);
}
