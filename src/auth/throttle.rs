//! Login throttling in memory: per-key failure streaks that, past a number of
//! free failures, lock the key for exponentially growing times. Keys are
//! opaque strings; callers throttle on several at once (`account:<email>`,
//! `ip:<addr>`) and refuse when any is locked.
//!
//! Time is always passed in (`now`), so tests drive it without sleeping and
//! one request uses one clock reading throughout.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures in a streak that cost nothing.
    pub free_failures: u32,
    /// A streak is forgotten once this long has passed since its last failure
    /// and the end of its lock, whichever is later.
    pub window: Duration,
    /// The longest single lock. Capped at one day whatever is configured.
    pub max_backoff: Duration,
}

impl Default for ThrottleConfig {
    /// Five free attempts, then 1 s, 2 s, 4 s ... up to 15 minutes, forgotten
    /// after 15 quiet minutes.
    fn default() -> Self {
        ThrottleConfig {
            free_failures: 5,
            window: Duration::from_secs(15 * 60),
            max_backoff: Duration::from_secs(15 * 60),
        }
    }
}

/// The first lock; each further failure doubles it.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Keeps `now + backoff` far from `Instant` overflow.
const BACKOFF_LIMIT: Duration = Duration::from_secs(24 * 60 * 60);
/// Fewest calls between two sweeps of the map.
const SWEEP_MIN: usize = 256;

pub struct Throttle {
    config: ThrottleConfig,
    state: Mutex<State>,
}

struct State {
    entries: HashMap<String, Entry>,
    calls_since_sweep: usize,
    /// A sweep costs one pass over the map, so it waits for as many calls as
    /// the map had entries after the previous one: O(1) per call amortised,
    /// and the map never grows past about twice its live entries.
    sweep_after: usize,
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

impl Entry {
    /// A streak ends a full window after its last event: a lock does not use
    /// up the window, or a patient attacker would get fresh free attempts as
    /// soon as each maximal lock ran out.
    fn expired(&self, now: Instant, window: Duration) -> bool {
        let quiet_since = match self.locked_until {
            Some(until) => until.max(self.last_failure),
            None => self.last_failure,
        };
        now.saturating_duration_since(quiet_since) >= window
    }

    fn retry_after(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }
}

impl Throttle {
    pub fn new(mut config: ThrottleConfig) -> Throttle {
        config.max_backoff = config.max_backoff.min(BACKOFF_LIMIT);
        Throttle {
            config,
            state: Mutex::new(State {
                entries: HashMap::new(),
                calls_since_sweep: 0,
                sweep_after: SWEEP_MIN,
            }),
        }
    }

    /// `Err(retry_after)` while `key` is locked, `Ok(())` otherwise.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut state = self.lock();
        self.maybe_sweep(&mut state, now);
        let Some(entry) = state.entries.get(key) else {
            return Ok(());
        };
        if let Some(wait) = entry.retry_after(now) {
            return Err(wait);
        }
        if entry.expired(now, self.config.window) {
            state.entries.remove(key);
        }
        Ok(())
    }

    /// Records a failed attempt on `key`. Past `free_failures` in the streak,
    /// locks the key for 1 s, 2 s, 4 s ... capped at `max_backoff`.
    pub fn failure(&self, key: &str, now: Instant) {
        let mut state = self.lock();
        self.maybe_sweep(&mut state, now);
        let entry = match state.entries.get_mut(key) {
            Some(entry) => entry,
            None => state.entries.entry(key.to_owned()).or_insert(Entry {
                failures: 0,
                last_failure: now,
                locked_until: None,
            }),
        };
        if entry.expired(now, self.config.window) {
            entry.failures = 0;
            entry.locked_until = None;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = entry.last_failure.max(now);
        if let Some(over) = entry.failures.checked_sub(self.config.free_failures) {
            if over > 0 {
                let until = now.checked_add(self.backoff(over));
                // Concurrent failures may arrive out of order: never shorten.
                entry.locked_until = entry.locked_until.max(until);
            }
        }
    }

    /// Forgets `key`: a successful login ends its streak.
    pub fn success(&self, key: &str) {
        self.lock().entries.remove(key);
    }

    /// The lock after the `over`-th failure beyond the free ones.
    fn backoff(&self, over: u32) -> Duration {
        let factor = 1u32.checked_shl(over - 1).unwrap_or(u32::MAX);
        FIRST_BACKOFF
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.config.max_backoff)
    }

    fn maybe_sweep(&self, state: &mut State, now: Instant) {
        state.calls_since_sweep += 1;
        if state.calls_since_sweep < state.sweep_after {
            return;
        }
        let window = self.config.window;
        state.entries.retain(|_, entry| !entry.expired(now, window));
        // Give memory back after a burst (e.g. a spray over many addresses).
        if state.entries.capacity() > 4 * state.entries.len().max(SWEEP_MIN) {
            state.entries.shrink_to_fit();
        }
        state.calls_since_sweep = 0;
        state.sweep_after = state.entries.len().max(SWEEP_MIN);
    }

    // No code panics while holding the lock, so a poisoned mutex still holds
    // a consistent map; throttling must keep working.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MIN: Duration = Duration::from_secs(60);

    fn throttle() -> Throttle {
        Throttle::new(ThrottleConfig::default())
    }

    /// Fails `key` once at `at` and returns what `check` says just after.
    fn fail(t: &Throttle, key: &str, at: Instant) -> Result<(), Duration> {
        t.failure(key, at);
        t.check(key, at)
    }

    #[test]
    fn five_failures_are_free_the_sixth_locks() {
        let t = throttle();
        let t0 = Instant::now();
        for i in 0..5 {
            assert_eq!(
                fail(&t, "account:a", t0 + i * S),
                Ok(()),
                "failure {}",
                i + 1
            );
        }
        let at = t0 + 5 * S;
        assert_eq!(fail(&t, "account:a", at), Err(S));
        assert_eq!(t.check("account:a", at + S / 4), Err(S * 3 / 4));
        assert_eq!(t.check("account:a", at + S), Ok(()));
    }

    #[test]
    fn lock_doubles_and_is_capped() {
        let t = throttle();
        let mut now = Instant::now();
        for _ in 0..5 {
            t.failure("k", now);
        }
        let mut expected = S;
        for _ in 0..20 {
            assert_eq!(fail(&t, "k", now), Err(expected));
            // Wait out the lock, as a well-behaved client would.
            now += expected;
            assert_eq!(t.check("k", now), Ok(()));
            expected = (expected * 2).min(15 * MIN);
        }
        assert_eq!(fail(&t, "k", now), Err(15 * MIN));
    }

    #[test]
    fn success_resets() {
        let t = throttle();
        let t0 = Instant::now();
        for _ in 0..7 {
            t.failure("k", t0);
        }
        assert!(t.check("k", t0).is_err());
        t.success("k");
        assert_eq!(t.check("k", t0), Ok(()));
        for _ in 0..5 {
            assert_eq!(fail(&t, "k", t0), Ok(()));
        }
        assert_eq!(fail(&t, "k", t0), Err(S));
    }

    #[test]
    fn failures_older_than_the_window_are_forgotten() {
        let t = throttle();
        let t0 = Instant::now();
        for _ in 0..5 {
            t.failure("k", t0);
        }
        // One second short of the window: the streak goes on.
        let t1 = t0 + 15 * MIN - S;
        assert_eq!(fail(&t, "k", t1), Err(S));

        let t = throttle();
        for _ in 0..5 {
            t.failure("k", t0);
        }
        let t1 = t0 + 15 * MIN;
        for i in 0..5 {
            assert_eq!(
                fail(&t, "k", t1),
                Ok(()),
                "failure {} of a new streak",
                i + 1
            );
        }
        assert_eq!(fail(&t, "k", t1), Err(S));
    }

    #[test]
    fn the_window_counts_from_the_end_of_a_lock() {
        let t = throttle();
        let t0 = Instant::now();
        for _ in 0..20 {
            t.failure("k", t0);
        }
        assert_eq!(t.check("k", t0), Err(15 * MIN));
        // The lock has ended but the window after it has not: still escalated.
        let t1 = t0 + 15 * MIN + 14 * MIN;
        assert_eq!(fail(&t, "k", t1), Err(15 * MIN));
        // A full quiet window after the lock: forgotten.
        let t2 = t1 + 15 * MIN + 15 * MIN;
        assert_eq!(fail(&t, "k", t2), Ok(()));
    }

    #[test]
    fn keys_are_independent() {
        let t = throttle();
        let t0 = Instant::now();
        for _ in 0..6 {
            t.failure("account:a@example.com", t0);
        }
        assert!(t.check("account:a@example.com", t0).is_err());
        assert_eq!(t.check("account:b@example.com", t0), Ok(()));
        assert_eq!(t.check("ip:192.0.2.1", t0), Ok(()));
        assert_eq!(fail(&t, "ip:192.0.2.1", t0), Ok(()));
        t.success("account:b@example.com");
        assert!(t.check("account:a@example.com", t0).is_err());
    }

    #[test]
    fn zero_free_failures_locks_at_once() {
        let t = Throttle::new(ThrottleConfig {
            free_failures: 0,
            window: MIN,
            max_backoff: 3 * S,
        });
        let t0 = Instant::now();
        assert_eq!(fail(&t, "k", t0), Err(S));
        assert_eq!(fail(&t, "k", t0), Err(2 * S));
        assert_eq!(fail(&t, "k", t0), Err(3 * S));
    }

    #[test]
    fn huge_max_backoff_does_not_overflow() {
        let t = Throttle::new(ThrottleConfig {
            free_failures: 0,
            window: Duration::MAX,
            max_backoff: Duration::MAX,
        });
        let t0 = Instant::now();
        for _ in 0..100 {
            t.failure("k", t0);
        }
        assert_eq!(t.check("k", t0), Err(BACKOFF_LIMIT));
    }

    #[test]
    fn stale_entries_are_swept_and_locked_ones_kept() {
        let t = throttle();
        let t0 = Instant::now();
        for i in 0..1000 {
            t.failure(&format!("ip:{i}"), t0);
        }
        for _ in 0..6 {
            t.failure("locked", t0 + 14 * MIN);
        }
        assert_eq!(t.lock().entries.len(), 1001);
        // After the window, enough calls to trigger a sweep on their own.
        let later = t0 + 15 * MIN;
        for _ in 0..1001 {
            let _ = t.check("nobody", later);
        }
        let state = t.lock();
        assert_eq!(state.entries.len(), 1);
        assert!(state.entries.contains_key("locked"));
    }

    #[test]
    fn shared_between_threads() {
        let t = std::sync::Arc::new(throttle());
        let t0 = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        t.failure("k", t0);
                    }
                })
            })
            .collect();
        for handle in threads {
            handle.join().unwrap();
        }
        // 40 failures: 35 beyond the free ones, far past the cap.
        assert_eq!(t.check("k", t0), Err(15 * MIN));
    }
}
