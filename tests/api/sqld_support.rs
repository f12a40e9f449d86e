//! The real libSQL server (`sqld`) for tests: started on free loopback ports with a fresh
//! database directory, namespaces on and no default namespace, killed when dropped. Runs when
//! `SQLD_BIN` names the binary (`../shared/bin/sqld` is one, and `.ci/run` sets it); without
//! it a test passes with a note, except under `CI=true`, where it fails.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tenantd::sqld::{Client, Config, SqldError};

/// How long a started sqld gets to answer `/health` (it opens its metadata store first).
const STARTUP: Duration = Duration::from_secs(30);

pub struct Sqld {
    child: Child,
    bin: PathBuf,
    /// Options beyond the harness's own, kept for a restart.
    extra: Vec<String>,
    pub http_port: u16,
    pub admin_port: u16,
    /// Holds the database directory and the server's log.
    dir: tempfile::TempDir,
}

/// The binary `SQLD_BIN` names, or `None` with a note (a failure under CI, which sets it).
pub fn sqld_bin_or_skip() -> Option<PathBuf> {
    match std::env::var_os("SQLD_BIN").filter(|b| !b.is_empty()) {
        Some(bin) => {
            let bin = PathBuf::from(bin);
            if !bin.is_file() {
                // A checkout without `../shared` beside it (the README's command): skipped as
                // without SQLD_BIN, except under CI, which must run these tests.
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "SQLD_BIN names {}, which is not a file",
                    bin.display()
                );
                eprintln!(
                    "note: SQLD_BIN names {}, which is not a file: sqld test skipped",
                    bin.display()
                );
                return None;
            }
            // Absolute: sqld runs in its temporary directory, where a relative path (the
            // README's `../shared/bin/sqld`) would name nothing.
            Some(bin.canonicalize().expect("resolve SQLD_BIN"))
        }
        None => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "no sqld binary: set SQLD_BIN (../shared/bin/sqld is libSQL's server, \
                 built from its sources; .ci/run sets it when that file exists)"
            );
            eprintln!("note: SQLD_BIN is not set: sqld test skipped");
            None
        }
    }
}

/// A running sqld, or `None` when the test is skipped (see `sqld_bin_or_skip`).
pub fn spawn_sqld() -> Option<Sqld> {
    spawn_sqld_with(&[])
}

/// `spawn_sqld`, with more of sqld's options (`--admin-auth-key K`...).
pub fn spawn_sqld_with(extra: &[&str]) -> Option<Sqld> {
    let bin = sqld_bin_or_skip()?;
    let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    let dir = tempfile::tempdir().expect("temp dir for sqld");
    // A free port found by binding port 0 can be taken by someone else before sqld binds it:
    // then sqld exits, and another pair is tried.
    let mut last_log = String::new();
    for _ in 0..3 {
        let (http_port, admin_port) = (free_port(), free_port());
        match start(&bin, dir.path(), http_port, admin_port, &extra) {
            Ok(child) => {
                return Some(Sqld {
                    child,
                    bin,
                    extra,
                    http_port,
                    admin_port,
                    dir,
                })
            }
            Err(log) => last_log = log,
        }
    }
    panic!("sqld did not start:\n{last_log}");
}

impl Sqld {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// Where sqld keeps its namespaces' databases, one directory each.
    pub fn dbs_dir(&self) -> PathBuf {
        self.dir.path().join("data").join("dbs")
    }

    /// The client's configuration as `serve` makes it: streams of the catalog's namespace kept
    /// open between statements.
    pub fn config(&self) -> Config {
        let mut config = Config::new(&self.url(), &self.admin_url());
        config.keep_streams = vec![tenantd::catalog::CENTRAL_NAMESPACE.to_string()];
        config
    }

    pub fn client(&self) -> Client {
        Client::new(self.config()).expect("sqld client")
    }

    /// Stops the server (killed, as a crash or a lost network would leave it); `restart`
    /// brings it back.
    pub fn stop(&mut self) {
        stop(&mut self.child);
    }

    /// Stops the server and starts it again on the same ports and data: what it kept in
    /// memory (open streams, their batons) is gone, what it committed is not.
    pub fn restart(&mut self) {
        stop(&mut self.child);
        self.child = start(
            &self.bin,
            self.dir.path(),
            self.http_port,
            self.admin_port,
            &self.extra,
        )
        .unwrap_or_else(|log| panic!("sqld did not restart:\n{log}"));
    }
}

impl Drop for Sqld {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind port 0")
        .port()
}

/// Starts sqld and waits for both its listeners; its log if it exits or never answers.
fn start(
    bin: &Path,
    dir: &Path,
    http_port: u16,
    admin_port: u16,
    extra: &[String],
) -> Result<Child, String> {
    let log_path = dir.join(format!("sqld-{http_port}.log"));
    let log = std::fs::File::create(&log_path).expect("sqld log file");
    let mut child = Command::new(bin)
        .arg("--enable-namespaces")
        .arg("--disable-default-namespace")
        .arg("--db-path")
        .arg(dir.join("data"))
        .arg("--http-listen-addr")
        .arg(format!("127.0.0.1:{http_port}"))
        .arg("--admin-listen-addr")
        .arg(format!("127.0.0.1:{admin_port}"))
        .arg("--no-welcome")
        .args(extra)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    let client = Client::new(Config::new(
        &format!("http://127.0.0.1:{http_port}"),
        &format!("http://127.0.0.1:{admin_port}"),
    ))
    .expect("sqld client");
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + STARTUP;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("sqld exited ({status}):\n{}", read_log()));
        }
        // Both listeners: /health on the Hrana one, any answer (401 with an admin key) to a
        // namespace lookup on the admin one.
        let admin_answers = !matches!(
            client.namespace_exists("startup-probe"),
            Err(SqldError::Transport(_))
        );
        if client.health().is_ok() && admin_answers {
            return Ok(child);
        }
        if Instant::now() > deadline {
            stop(&mut child);
            return Err(format!(
                "sqld did not answer within {STARTUP:?}:\n{}",
                read_log()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
