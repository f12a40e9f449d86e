//! The bounded pool that runs password hashing and verification. Argon2 costs
//! tens of milliseconds of CPU and ~19 MiB per call, so a flood of logins run
//! on request threads would starve everything else; here at most `threads`
//! run at once, at most `queue` wait, and anyone beyond that is told `Busy`
//! immediately, for the HTTP layer to answer 429 with Retry-After.
//!
//! Callers block on their own job's answer; there is no async runtime.

use std::fmt;
use std::num::NonZeroUsize;
use std::panic::{self, AssertUnwindSafe};
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::password::{self, PasswordError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HasherConfig {
    /// Worker threads: clamped to 1..=available cores, since hashing is pure
    /// CPU work and more threads than cores only add memory and latency.
    pub threads: usize,
    /// Jobs allowed to wait for a worker; at least 1.
    pub queue: usize,
}

/// Queued jobs per worker by default. At roughly 50 ms per Argon2 run on one
/// core, the last of 16 queued callers waits under a second; past that it is
/// better to tell the client to retry than to hold its connection.
pub const QUEUE_PER_THREAD: usize = 16;

impl Default for HasherConfig {
    fn default() -> Self {
        let threads = cores();
        HasherConfig {
            threads,
            queue: QUEUE_PER_THREAD * threads,
        }
    }
}

fn cores() -> usize {
    thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// The pool was full: nothing was done, try again later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Busy;

impl fmt::Display for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("password hashing is at capacity, retry shortly")
    }
}

impl std::error::Error for Busy {}

/// Why [`Hasher::hash`] produced no hash.
#[derive(Debug)]
pub enum HashError {
    /// The queue was full (answer 429).
    Busy,
    /// Argon2 refused the input or failed (answer 500).
    Password(PasswordError),
    /// The worker died while running the job (a bug; answer 500).
    WorkerLost,
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashError::Busy => Busy.fmt(f),
            HashError::Password(e) => e.fmt(f),
            HashError::WorkerLost => f.write_str("password hashing worker failed"),
        }
    }
}

impl std::error::Error for HashError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HashError::Password(e) => Some(e),
            HashError::Busy | HashError::WorkerLost => None,
        }
    }
}

impl From<Busy> for HashError {
    fn from(_: Busy) -> Self {
        HashError::Busy
    }
}

/// The outcome of a verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub ok: bool,
    /// When `ok` and the stored hash used outdated settings: a fresh hash of
    /// the same password for the caller to store in its place.
    pub rehash: Option<String>,
}

type Job = Box<dyn FnOnce() + Send>;

pub struct Hasher {
    // An Option only so that Drop can close the queue before joining.
    jobs: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Hasher {
    pub fn new(config: HasherConfig) -> Hasher {
        let threads = config.threads.clamp(1, cores());
        let (jobs, queue) = crossbeam_channel::bounded::<Job>(config.queue.max(1));
        let workers = (0..threads)
            .map(|i| {
                let queue = queue.clone();
                thread::Builder::new()
                    .name(format!("hasher-{i}"))
                    .spawn(move || {
                        if i == 0 {
                            // Pay for the dummy hash now, not in the first
                            // login for an unknown account.
                            let _ = password::dummy_hash();
                            release_freed_memory();
                        }
                        work(queue)
                    })
            })
            .filter_map(|spawned| match spawned {
                Ok(handle) => Some(handle),
                Err(e) => {
                    log::error!("cannot start a password hashing thread: {e}");
                    None
                }
            })
            .collect();
        Hasher {
            jobs: Some(jobs),
            workers,
        }
    }

    /// Verifies `password` against `stored`. `None` (no such account) still
    /// spends one verification on the dummy hash and answers `ok: false`, so
    /// both cases take the same time. Blocks until done; `Err(Busy)` at once
    /// when the queue is full.
    pub fn verify(&self, password: String, stored: Option<String>) -> Result<Verified, Busy> {
        let answer = self.submit(move || {
            let Some(stored) = stored else {
                password::verify_dummy(&password);
                return Verified {
                    ok: false,
                    rehash: None,
                };
            };
            let ok = password::verify(&password, &stored);
            let rehash = if ok && password::needs_rehash(&stored) {
                password::hash(&password)
                    .map_err(|e| log::warn!("cannot rehash an outdated password hash: {e}"))
                    .ok()
            } else {
                None
            };
            Verified { ok, rehash }
        })?;
        // A lost worker is a refusal: authentication fails closed.
        Ok(answer.recv().unwrap_or_else(|_| {
            log::error!("password verification worker failed");
            Verified {
                ok: false,
                rehash: None,
            }
        }))
    }

    /// Hashes `password` for storage. Blocks until done; `Err(Busy)` at once
    /// when the queue is full.
    pub fn hash(&self, password: String) -> Result<String, HashError> {
        let answer = self.submit(move || password::hash(&password))?;
        match answer.recv() {
            Ok(result) => result.map_err(HashError::Password),
            Err(_) => Err(HashError::WorkerLost),
        }
    }

    /// Queues `job` without waiting for room; the receiver yields its result.
    /// Generic so that tests can occupy the real workers with jobs they control.
    fn submit<T, F>(&self, job: F) -> Result<Receiver<T>, Busy>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let job: Job = Box::new(move || {
            // The caller may have gone; nobody is left to tell.
            let _ = reply.send(job());
        });
        let jobs = self.jobs.as_ref().ok_or(Busy)?;
        match jobs.try_send(job) {
            Ok(()) => Ok(answer),
            Err(TrySendError::Full(_)) => Err(Busy),
            // Every worker is gone (none could be started): as good as full.
            Err(TrySendError::Disconnected(_)) => {
                log::error!("no password hashing worker is running");
                Err(Busy)
            }
        }
    }
}

fn work(queue: Receiver<Job>) {
    for job in queue.iter() {
        // A panicking job must not shrink the pool; its caller sees the
        // reply channel close instead.
        if panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
            log::error!("a password hashing job panicked");
        }
        if queue.is_empty() {
            release_freed_memory();
        }
    }
}

/// Each hash takes 19 MiB of working memory. glibc keeps freed blocks of a thread's arena for
/// reuse, so every hashing thread would hold that much for good; give it back after a burst.
/// Cheap next to the hash itself.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Drop for Hasher {
    /// Closes the queue, lets the workers finish what was queued, and joins them.
    fn drop(&mut self) {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn single() -> Hasher {
        Hasher::new(HasherConfig {
            threads: 1,
            queue: 1,
        })
    }

    /// Occupies the single worker until the returned sender is dropped or
    /// sent to; returns once the worker has taken the job off the queue.
    fn block_worker(hasher: &Hasher) -> (Sender<()>, Receiver<()>) {
        let (started_tx, started_rx) = crossbeam_channel::bounded(1);
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
        let done = hasher
            .submit(move || {
                started_tx.send(()).unwrap();
                let _ = release_rx.recv();
            })
            .unwrap();
        started_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("worker never started the blocking job");
        (release_tx, done)
    }

    #[test]
    fn default_config_matches_the_machine() {
        let config = HasherConfig::default();
        assert_eq!(config.threads, cores());
        assert_eq!(config.queue, QUEUE_PER_THREAD * cores());
        let hasher = Hasher::new(HasherConfig {
            threads: 10_000,
            queue: 0,
        });
        assert_eq!(hasher.workers.len(), cores());
    }

    #[test]
    fn hash_and_verify_through_the_pool() {
        let hasher = Hasher::new(HasherConfig::default());
        let phc = hasher.hash("s3cret".into()).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_eq!(
            hasher.verify("s3cret".into(), Some(phc.clone())).unwrap(),
            Verified {
                ok: true,
                rehash: None
            }
        );
        assert_eq!(
            hasher.verify("s3cret!".into(), Some(phc)).unwrap(),
            Verified {
                ok: false,
                rehash: None
            }
        );
        assert_eq!(
            hasher.verify("s3cret".into(), None).unwrap(),
            Verified {
                ok: false,
                rehash: None
            }
        );
        assert_eq!(
            hasher
                .verify("s3cret".into(), Some("garbage".into()))
                .unwrap(),
            Verified {
                ok: false,
                rehash: None
            }
        );
    }

    #[test]
    fn outdated_hash_comes_back_with_a_rehash() {
        use argon2::password_hash::{PasswordHasher, SaltString};
        use argon2::{Algorithm, Argon2, Params, Version};
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw", &SaltString::encode_b64(b"0123456789abcdef").unwrap())
        .unwrap()
        .to_string();

        let hasher = single();
        let verified = hasher.verify("pw".into(), Some(weak.clone())).unwrap();
        assert!(verified.ok);
        let fresh = verified.rehash.expect("an outdated hash must be replaced");
        assert!(!password::needs_rehash(&fresh));
        assert!(password::verify("pw", &fresh));
        // A wrong password never yields a rehash.
        assert_eq!(
            hasher.verify("px".into(), Some(weak)).unwrap(),
            Verified {
                ok: false,
                rehash: None
            }
        );
    }

    #[test]
    fn full_queue_answers_busy_at_once() {
        let hasher = single();
        let (release, blocker_done) = block_worker(&hasher);
        // The worker is busy; one job fits in the queue, the next does not.
        let queued = hasher.submit(|| 42).unwrap();
        assert_eq!(
            hasher.hash("pw".into()).unwrap_err().to_string(),
            Busy.to_string()
        );
        assert_eq!(hasher.verify("pw".into(), None), Err(Busy));
        release.send(()).unwrap();
        blocker_done.recv().unwrap();
        assert_eq!(queued.recv().unwrap(), 42);
        // Room again once the worker caught up.
        assert!(hasher.hash("pw".into()).is_ok());
    }

    #[test]
    fn concurrent_callers_beyond_the_queue_get_busy() {
        let hasher = single();
        let (release, _blocker_done) = block_worker(&hasher);
        let (results_tx, results_rx) = crossbeam_channel::unbounded();
        thread::scope(|scope| {
            for i in 0..4 {
                let hasher = &hasher;
                let results_tx = results_tx.clone();
                scope.spawn(move || {
                    let result = hasher.verify(format!("pw{i}"), None);
                    results_tx.send(result).unwrap();
                });
            }
            // Exactly one caller found room and now waits on the blocked
            // worker; the other three must have been refused without waiting.
            for _ in 0..3 {
                let result = results_rx.recv_timeout(Duration::from_secs(60)).unwrap();
                assert_eq!(result, Err(Busy));
            }
            assert!(
                results_rx.try_recv().is_err(),
                "the queued caller returned early"
            );
            release.send(()).unwrap();
            let last = results_rx.recv_timeout(Duration::from_secs(60)).unwrap();
            assert_eq!(
                last,
                Ok(Verified {
                    ok: false,
                    rehash: None
                })
            );
        });
    }

    #[test]
    fn a_panicking_job_does_not_kill_the_pool() {
        let hasher = single();
        let answer = hasher.submit(|| -> u8 { panic!("boom") }).unwrap();
        assert!(answer.recv().is_err());
        assert_eq!(hasher.submit(|| 7).unwrap().recv().unwrap(), 7);
    }

    #[test]
    fn drop_finishes_queued_jobs() {
        let hasher = single();
        let (release, _blocker_done) = block_worker(&hasher);
        let queued = hasher.submit(|| "done").unwrap();
        release.send(()).unwrap();
        drop(hasher);
        assert_eq!(queued.try_recv(), Ok("done"));
    }
}
