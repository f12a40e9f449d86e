//! The store contract (`store`) checked the same way on each backend: a local tenant
//! file, and a namespace of a real libSQL server when `SQLD_BIN` names one (see
//! `sqld_support`). Migrations, values, writes that commit and writes that roll back,
//! `RETURNING`, first-row reads, errors, the storage count the plans use, and isolation of
//! two databases.

use std::cell::RefCell;

use tenantd::args;
use tenantd::db::{self, Create, DbKind};
use tenantd::sqld::Client;
use tenantd::store::sqld as store_sqld;
use tenantd::store::{Sql, StoreError, Value};

use crate::sqld_support::spawn_sqld;

/// One tenant database behind the contract.
trait Backend {
    fn name(&self) -> String;
    fn read(&self, f: &mut dyn FnMut(&dyn Sql));
    fn write(
        &self,
        f: &mut dyn FnMut(&dyn Sql) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
}

struct Local {
    _dir: tempfile::TempDir,
    conn: RefCell<rusqlite::Connection>,
}

impl Local {
    fn new() -> Local {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = db::open(&dir.path().join("t.db"), DbKind::Tenant, Create::New).unwrap();
        db::migrate(&mut conn, db::tenant_migrations()).unwrap();
        Local {
            _dir: dir,
            conn: RefCell::new(conn),
        }
    }
}

impl Backend for Local {
    fn name(&self) -> String {
        "local".into()
    }

    fn read(&self, f: &mut dyn FnMut(&dyn Sql)) {
        f(&*self.conn.borrow());
    }

    fn write(
        &self,
        f: &mut dyn FnMut(&dyn Sql) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.borrow_mut();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        f(&tx)?;
        tx.commit().map_err(StoreError::from)
    }
}

struct Remote {
    client: Client,
    namespace: String,
}

impl Remote {
    fn new(client: &Client, namespace: &str) -> Remote {
        client.create_namespace(namespace).unwrap();
        let applied = store_sqld::migrate(client, namespace, db::tenant_migrations()).unwrap();
        assert_eq!(applied.len(), db::tenant_migrations().len());
        // Again: nothing left to apply.
        assert!(
            store_sqld::migrate(client, namespace, db::tenant_migrations())
                .unwrap()
                .is_empty()
        );
        Remote {
            client: client.clone(),
            namespace: namespace.to_string(),
        }
    }
}

impl Backend for Remote {
    fn name(&self) -> String {
        format!("sqld namespace {}", self.namespace)
    }

    fn read(&self, f: &mut dyn FnMut(&dyn Sql)) {
        f(&store_sqld::SqldRead {
            client: &self.client,
            namespace: &self.namespace,
        });
    }

    fn write(
        &self,
        f: &mut dyn FnMut(&dyn Sql) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        store_sqld::write(&self.client, &self.namespace, |db| f(db))
    }
}

fn orders(db: &dyn Sql) -> Vec<(i64, String)> {
    db.query_map(
        "SELECT number, title FROM orders ORDER BY number",
        &[],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// An order as the workspace writes one: the next number, then the row, `RETURNING` both.
fn add_order(db: &dyn Sql, title: &str) -> Result<(i64, i64), StoreError> {
    let number: i64 = db.query_one(
        "UPDATE counters SET value = value + 1 WHERE name = 'order_number' RETURNING value",
        &[],
        |r| r.get(0),
    )?;
    let id: i64 = db.query_one(
        "INSERT INTO orders (number, title, customer_name, amount_minor, currency, status,
                             created_by, created_at, updated_at)
         VALUES (?1, ?2, 'Ada', 100, 'EUR', 'new', 1, ?3, ?3) RETURNING id",
        args![number, title, "2026-12-05T00:00:00.000Z"],
        |r| r.get(0),
    )?;
    Ok((id, number))
}

fn contract(backend: &dyn Backend) {
    let name = backend.name();
    // A write commits: what it wrote, RETURNING included, is read back.
    let mut made = None;
    backend
        .write(&mut |db| {
            made = Some(add_order(db, "first")?);
            // Read-your-write inside the transaction.
            assert_eq!(orders(db), [(1, "first".to_string())], "{name}");
            Ok(())
        })
        .unwrap();
    assert_eq!(made, Some((1, 1)), "{name}");
    backend.read(&mut |db| assert_eq!(orders(db), [(1, "first".to_string())], "{name}"));

    // A write that fails leaves nothing, its counter included.
    let failed = backend.write(&mut |db| {
        add_order(db, "never")?;
        Err(StoreError::Sql {
            code: None,
            message: "changed my mind".into(),
        })
    });
    assert!(failed.is_err(), "{name}");
    backend.read(&mut |db| {
        assert_eq!(orders(db).len(), 1, "{name}");
        let counter: i64 = db
            .query_one(
                "SELECT value FROM counters WHERE name = 'order_number'",
                &[],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(counter, 1, "{name}: the number went back");
    });

    // A CHECK the schema makes is an SQL error, and the write it was in is rolled back.
    let refused = backend.write(&mut |db| {
        add_order(db, "")?;
        Ok(())
    });
    assert!(
        matches!(refused, Err(StoreError::Sql { .. })),
        "{name}: {refused:?}"
    );

    // Values round-trip.
    backend
        .write(&mut |db| {
            db.execute(
                "CREATE TABLE scratch (n INTEGER, r REAL, s TEXT, b BLOB)",
                &[],
            )?;
            for (n, r, s, b) in [
                (
                    Value::Integer(i64::MIN),
                    Value::Real(-0.5),
                    Value::from("ünï\u{0}x"),
                    Value::Blob(vec![0, 255]),
                ),
                (
                    Value::Integer(i64::MAX),
                    Value::Null,
                    Value::from(""),
                    Value::Blob(vec![]),
                ),
                (Value::Null, Value::Real(1e300), Value::Null, Value::Null),
            ] {
                let changed =
                    db.execute("INSERT INTO scratch VALUES (?1, ?2, ?3, ?4)", &[n, r, s, b])?;
                assert_eq!(changed.rows, 1);
            }
            Ok(())
        })
        .unwrap();
    backend.read(&mut |db| {
        let rows = db
            .query_map("SELECT n, r, s, b FROM scratch ORDER BY rowid", &[], |r| {
                Ok((
                    r.get::<Option<i64>>(0)?,
                    r.get::<Option<f64>>(1)?,
                    r.get::<Option<String>>(2)?,
                    r.get::<Option<Vec<u8>>>(3)?,
                ))
            })
            .unwrap();
        assert_eq!(
            rows,
            [
                (
                    Some(i64::MIN),
                    Some(-0.5),
                    Some("ünï\u{0}x".into()),
                    Some(vec![0, 255])
                ),
                (Some(i64::MAX), None, Some(String::new()), Some(vec![])),
                (None, Some(1e300), None, None),
            ],
            "{name}"
        );
        // The first row only; none at all is None, and an error for query_one.
        let first = db
            .query_row("SELECT n FROM scratch ORDER BY rowid", &[], |r| {
                r.get::<Option<i64>>(0)
            })
            .unwrap();
        assert_eq!(first, Some(Some(i64::MIN)), "{name}");
        let none = db
            .query_row("SELECT n FROM scratch WHERE 0", &[], |r| r.get::<i64>(0))
            .unwrap();
        assert_eq!(none, None, "{name}");
        assert!(db
            .query_one("SELECT n FROM scratch WHERE 0", &[], |r| r.get::<i64>(0))
            .is_err());
        // A column read as another type says so.
        let wrong = db
            .query_row("SELECT s FROM scratch ORDER BY rowid", &[], |r| {
                r.get::<i64>(0)
            })
            .unwrap_err();
        assert!(
            matches!(wrong, StoreError::Type { .. }),
            "{name}: {wrong:?}"
        );
        let missing = db
            .query_row("SELECT * FROM nowhere", &[], |r| r.get::<i64>(0))
            .unwrap_err();
        assert!(
            matches!(missing, StoreError::Sql { .. }),
            "{name}: {missing:?}"
        );
        // The storage plans count: the database's pages and the files' contents.
        let used = tenantd::workspace::files::storage_used(db).unwrap();
        assert!(used > 0, "{name}: {used}");
    });
}

#[test]
fn the_contract_holds_on_a_local_file() {
    contract(&Local::new());
}

#[test]
fn the_contract_holds_on_an_sqld_namespace_and_namespaces_stay_apart() {
    let Some(sqld) = spawn_sqld() else { return };
    let client = sqld.client();
    let one = Remote::new(&client, "c0ffee00-0000-4000-8000-000000000001");
    contract(&one);
    // A second tenant's namespace has none of the first one's rows.
    let two = Remote::new(&client, "c0ffee00-0000-4000-8000-000000000002");
    two.read(&mut |db| assert!(orders(db).is_empty()));
    two.write(&mut |db| add_order(db, "second's").map(|_| ()))
        .unwrap();
    one.read(&mut |db| assert_eq!(orders(db), [(1, "first".to_string())]));
    two.read(&mut |db| assert_eq!(orders(db), [(1, "second's".to_string())]));
}

#[test]
fn two_writers_on_one_namespace_take_turns() {
    let Some(sqld) = spawn_sqld() else { return };
    let client = sqld.client();
    let ns = "c0ffee00-0000-4000-8000-000000000003";
    drop(Remote::new(&client, ns));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let client = client.clone();
            std::thread::spawn(move || {
                for j in 0..5 {
                    store_sqld::write(&client, ns, |db| {
                        add_order(db, &format!("w{i}-{j}")).map(|_| ())
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let read = store_sqld::SqldRead {
        client: &client,
        namespace: ns,
    };
    let numbers: Vec<i64> = orders(&read).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        numbers,
        (1..=20).collect::<Vec<_>>(),
        "numbers unique and gap-free"
    );
}
