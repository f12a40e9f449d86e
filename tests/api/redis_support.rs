//! A `redis-server` of our own for the tests of real-time across nodes (Debian's, started on a
//! free loopback port without persistence, killed when dropped). Without `redis-server` a test
//! prints a note and passes, except under `CI=true`, where it fails: `.ci/run` installs it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tenantd::realtime::RedisUrl;

use crate::support::eventually;

/// A `redis-server` of our own, on a free loopback port, without persistence.
pub(crate) struct Redis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    /// A running server, or `None` with a note when there is no `redis-server` (a failure
    /// under CI, which installs it).
    pub(crate) fn start_or_skip() -> Option<Redis> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "redis-server is missing under CI (.ci/run installs it)"
            );
            eprintln!("note: no redis-server on PATH: test skipped");
            return None;
        }
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = Redis::spawn(port, &dir);
        Some(Redis { child, port, dir })
    }

    fn spawn(port: u16, dir: &tempfile::TempDir) -> Child {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let mut child = child;
        let ready = eventually(Duration::from_secs(10), || {
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            assert!(!exited, "redis-server exited at once (port {port} taken?)");
            Redis::pong(port)
        });
        assert!(ready, "redis-server did not answer PING on port {port}");
        child
    }

    fn pong(port: u16) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut answer = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok()
            && s.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }

    pub(crate) fn url(&self) -> RedisUrl {
        RedisUrl::parse(&self.url_text()).unwrap()
    }

    /// The URL as `serve --redis-url` takes it.
    pub(crate) fn url_text(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server and starts a new one on the same port: every connection to it is cut.
    pub(crate) fn restart(&mut self) {
        self.stop();
        self.child = Redis::spawn(self.port, &self.dir);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port below the kernel's ephemeral range (32768 and up on Linux), where the
/// port-0 listeners and outgoing connections of the other tests never land: the server is
/// restarted on the same port, and a port from the ephemeral range could be taken meanwhile.
fn free_port() -> u16 {
    loop {
        let port = rand::random::<u16>() % 12_000 + 20_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
