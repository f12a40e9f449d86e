//! Login throttling in memory, after OWASP's "Slow Down Online Guessing Attacks with Device
//! Cookies". A client that logged in to an account before shows a device cookie for it
//! (`auth::device`, checked by the caller) and has a failure budget of its own; every other
//! client of the account shares one budget, and each client address has one more. Locking out
//! the account's unknown clients, which anyone can do, therefore locks out none of its owner's
//! known devices; and a known device that fails too often is locked alone, after which it
//! counts as unknown.
//!
//! A budget is a streak of failures that, past a number of free failures, locks for
//! exponentially growing times. Time is always passed in (`now`), so tests drive it without
//! sleeping and one request uses one clock reading throughout; the server reads
//! [`Throttle::now`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Known devices with a streak kept at most; past it, the least failed are forgotten first.
    pub max_devices: usize,
    /// Tests only: the throttle's clock stands still from its creation and moves only by
    /// [`Throttle::advance`], so a lock cannot run out while a slow machine works through a
    /// test's attempts.
    pub frozen_clock: bool,
}

impl Default for ThrottleConfig {
    /// Five free failures, then 1 s, 2 s, 4 s ... up to 15 minutes, forgotten
    /// after 15 quiet minutes.
    fn default() -> Self {
        ThrottleConfig {
            free_failures: 5,
            window: Duration::from_secs(15 * 60),
            max_backoff: Duration::from_secs(15 * 60),
            max_devices: 65_536,
            frozen_clock: false,
        }
    }
}

/// The first lock; each further failure doubles it.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Keeps `now + backoff` far from `Instant` overflow.
const BACKOFF_LIMIT: Duration = Duration::from_secs(24 * 60 * 60);
/// Fewest calls between two sweeps of the map.
const SWEEP_MIN: usize = 256;

/// A login attempt as [`Throttle::admit`] classed it: the budgets it counts against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The shared budget of the account's unknown clients.
    account: String,
    /// The client address's budget, for unknown clients.
    address: String,
    /// A known device that is not locked: its own budget, and nothing else.
    device: Option<String>,
}

impl Attempt {
    /// Whether the attempt came from a known device (and counts against it alone).
    pub fn trusted(&self) -> bool {
        self.device.is_some()
    }
}

pub struct Throttle {
    /// Unknown clients: `<realm>:<account>` and `ip:<address>`.
    shared: Streaks,
    /// Known devices, by their cookie's nonce; capped at `max_devices`.
    devices: Streaks,
    /// Added to the system clock by [`Throttle::advance`], in nanoseconds.
    skipped: AtomicU64,
    /// With `frozen_clock`, the instant the clock stands at (before what `advance` added).
    frozen_at: Option<Instant>,
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Throttle {
        let devices = config.max_devices.max(1);
        let frozen_at = config.frozen_clock.then(Instant::now);
        Throttle {
            shared: Streaks::new(config.clone(), usize::MAX),
            devices: Streaks::new(config, devices),
            skipped: AtomicU64::new(0),
            frozen_at,
        }
    }

    /// The throttle's clock: the system's monotonic clock (or, with `frozen_clock`, the moment
    /// the throttle was made), plus what `advance` added.
    pub fn now(&self) -> Instant {
        self.frozen_at.unwrap_or_else(Instant::now)
            + Duration::from_nanos(self.skipped.load(Ordering::Relaxed))
    }

    /// Moves the throttle's clock forward. Only tests call it: they let locks run out
    /// without sleeping through them.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.skipped.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Classes an attempt on `account` (as the lookup normalises it) of `realm`, from
    /// `address`, with `device` the nonce of a device cookie the caller found valid for this
    /// realm and account, if any. `Err(retry_after)` when the attempt may not go on: the
    /// account's unknown clients or the address are locked, and the client is no known device
    /// that is not locked itself.
    pub fn admit(
        &self,
        realm: &str,
        account: &str,
        address: IpAddr,
        device: Option<&str>,
        now: Instant,
    ) -> Result<Attempt, Duration> {
        let mut attempt = Attempt {
            account: format!("{realm}:{account}"),
            address: format!("ip:{address}"),
            device: None,
        };
        if let Some(device) = device {
            if self.devices.check(device, now).is_ok() {
                attempt.device = Some(device.to_owned());
                return Ok(attempt);
            }
        }
        let account = self.shared.check(&attempt.account, now);
        let address = self.shared.check(&attempt.address, now);
        match (account, address) {
            (Ok(()), Ok(())) => Ok(attempt),
            (Err(a), Err(b)) => Err(a.max(b)),
            (Err(wait), _) | (_, Err(wait)) => Err(wait),
        }
    }

    /// Records a failed attempt against the budgets it counts against.
    pub fn failure(&self, attempt: &Attempt, now: Instant) {
        match &attempt.device {
            Some(device) => self.devices.failure(device, now),
            None => {
                self.shared.failure(&attempt.account, now);
                self.shared.failure(&attempt.address, now);
            }
        }
    }

    /// A successful login ends a known device's streak. The unknown clients' streak goes on:
    /// a guesser shares it, and the owner's success must not give them fresh free failures.
    pub fn success(&self, attempt: &Attempt) {
        if let Some(device) = &attempt.device {
            self.devices.success(device);
        }
    }
}

/// Per-key failure streaks.
struct Streaks {
    config: ThrottleConfig,
    /// Keys kept at most; past it, the least failed are forgotten first.
    cap: usize,
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
        now.saturating_duration_since(self.quiet_since()) >= window
    }

    fn quiet_since(&self) -> Instant {
        match self.locked_until {
            Some(until) => until.max(self.last_failure),
            None => self.last_failure,
        }
    }

    fn retry_after(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }
}

impl Streaks {
    fn new(mut config: ThrottleConfig, cap: usize) -> Streaks {
        config.max_backoff = config.max_backoff.min(BACKOFF_LIMIT);
        Streaks {
            config,
            cap,
            state: Mutex::new(State {
                entries: HashMap::new(),
                calls_since_sweep: 0,
                sweep_after: SWEEP_MIN,
            }),
        }
    }

    /// `Err(retry_after)` while `key` is locked, `Ok(())` otherwise.
    fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
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
    fn failure(&self, key: &str, now: Instant) {
        let mut state = self.lock();
        self.maybe_sweep(&mut state, now);
        if !state.entries.contains_key(key) && state.entries.len() >= self.cap {
            self.make_room(&mut state, now);
        }
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
    fn success(&self, key: &str) {
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

    /// Brings a full map under its cap: the expired streaks go, then, if that is not enough,
    /// an eighth of the cap, the least failed and longest quiet first, so that the next
    /// eighth of new keys costs no pass over the map. Locked streaks go last: forgetting one
    /// gives its holder a fresh budget.
    fn make_room(&self, state: &mut State, now: Instant) {
        let window = self.config.window;
        state.entries.retain(|_, entry| !entry.expired(now, window));
        if state.entries.len() < self.cap {
            return;
        }
        let excess = state.entries.len() + 1 - self.cap;
        let count = excess.max(self.cap / 8).min(state.entries.len());
        let mut ranked: Vec<(bool, u32, Instant, &String)> = state
            .entries
            .iter()
            .map(|(key, e)| {
                (
                    e.retry_after(now).is_some(),
                    e.failures,
                    e.quiet_since(),
                    key,
                )
            })
            .collect();
        ranked.select_nth_unstable(count - 1);
        let gone: Vec<String> = ranked[..count]
            .iter()
            .map(|(.., key)| (*key).clone())
            .collect();
        for key in gone {
            state.entries.remove(&key);
        }
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

    fn throttle() -> Streaks {
        streaks(ThrottleConfig::default())
    }

    fn streaks(config: ThrottleConfig) -> Streaks {
        Streaks::new(config, usize::MAX)
    }

    /// Fails `key` once at `at` and returns what `check` says just after.
    fn fail(t: &Streaks, key: &str, at: Instant) -> Result<(), Duration> {
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
        let t = streaks(ThrottleConfig {
            free_failures: 0,
            window: MIN,
            max_backoff: 3 * S,
            ..ThrottleConfig::default()
        });
        let t0 = Instant::now();
        assert_eq!(fail(&t, "k", t0), Err(S));
        assert_eq!(fail(&t, "k", t0), Err(2 * S));
        assert_eq!(fail(&t, "k", t0), Err(3 * S));
    }

    #[test]
    fn huge_max_backoff_does_not_overflow() {
        let t = streaks(ThrottleConfig {
            free_failures: 0,
            window: Duration::MAX,
            max_backoff: Duration::MAX,
            ..ThrottleConfig::default()
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

    // The throttle as a whole: known devices and unknown clients.

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    /// Admits and fails one attempt on the owner's account: whether it was let in.
    fn guess(t: &Throttle, address: IpAddr, device: Option<&str>, at: Instant) -> bool {
        match t.admit("account", "owner", address, device, at) {
            Ok(attempt) => {
                t.failure(&attempt, at);
                true
            }
            Err(_) => false,
        }
    }

    #[test]
    fn known_devices_get_in_while_unknown_clients_are_locked_out() {
        let t = Throttle::new(ThrottleConfig::default());
        let t0 = Instant::now();
        // Six guesses from six addresses: the account's unknown clients are locked.
        for i in 0..6 {
            assert!(guess(&t, ip(i), None, t0), "guess {}", i + 1);
        }
        assert_eq!(t.admit("account", "owner", ip(99), None, t0), Err(S));
        // The owner's device, even from a guesser's address.
        let attempt = t
            .admit("account", "owner", ip(0), Some("laptop"), t0)
            .unwrap();
        assert!(attempt.trusted());
        t.success(&attempt);
        // Another account, and another realm, are not locked.
        assert!(t.admit("account", "eve", ip(99), None, t0).is_ok());
        assert!(t.admit("admin", "owner", ip(99), None, t0).is_ok());
        // The owner's success gave the guessers nothing: the next guess locks for 2 s.
        assert!(guess(&t, ip(7), None, t0 + S));
        assert_eq!(t.admit("account", "owner", ip(8), None, t0 + S), Err(2 * S));
    }

    #[test]
    fn a_device_that_fails_too_often_is_locked_alone_then_counts_as_unknown() {
        let t = Throttle::new(ThrottleConfig::default());
        let t0 = Instant::now();
        for i in 0..6 {
            assert!(guess(&t, ip(1), Some("stolen"), t0), "failure {}", i + 1);
        }
        // Its failures counted against neither the account nor the address.
        assert!(t.admit("account", "owner", ip(1), None, t0).is_ok());
        // Locked, it is an unknown client: its failures now count against the shared budgets.
        let attempt = t
            .admit("account", "owner", ip(1), Some("stolen"), t0)
            .unwrap();
        assert!(!attempt.trusted());
        for _ in 0..5 {
            assert!(guess(&t, ip(1), Some("stolen"), t0));
        }
        assert!(guess(&t, ip(2), None, t0), "the sixth shared failure");
        assert!(t.admit("account", "owner", ip(3), None, t0).is_err());
        assert!(t
            .admit("account", "owner", ip(3), Some("stolen"), t0)
            .is_err());
        // The owner's other device is not locked.
        assert!(t
            .admit("account", "owner", ip(3), Some("desk"), t0)
            .unwrap()
            .trusted());
        // Once its lock is over, the device has its own budget again.
        let later = t0 + S;
        assert!(t
            .admit("account", "owner", ip(3), Some("stolen"), later)
            .unwrap()
            .trusted());
    }

    #[test]
    fn a_success_ends_the_devices_streak_only() {
        let t = Throttle::new(ThrottleConfig::default());
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(guess(&t, ip(1), Some("laptop"), t0));
            assert!(guess(&t, ip(1), None, t0));
        }
        let known = t
            .admit("account", "owner", ip(1), Some("laptop"), t0)
            .unwrap();
        t.success(&known);
        let unknown = t.admit("account", "owner", ip(1), None, t0).unwrap();
        t.success(&unknown);
        // The device starts over with five free failures; the unknown clients do not.
        for _ in 0..5 {
            assert!(guess(&t, ip(1), Some("laptop"), t0));
        }
        assert!(guess(&t, ip(2), None, t0));
        assert_eq!(t.admit("account", "owner", ip(3), None, t0), Err(S));
        assert!(t
            .admit("account", "owner", ip(3), Some("laptop"), t0)
            .is_ok());
    }

    #[test]
    fn an_address_is_locked_for_unknown_clients_across_accounts() {
        let t = Throttle::new(ThrottleConfig::default());
        let t0 = Instant::now();
        for i in 0..6 {
            let attempt = t
                .admit("account", &format!("user{i}"), ip(1), None, t0)
                .unwrap();
            t.failure(&attempt, t0);
        }
        assert_eq!(t.admit("account", "owner", ip(1), None, t0), Err(S));
        assert!(t.admit("account", "owner", ip(2), None, t0).is_ok());
        assert!(t
            .admit("account", "owner", ip(1), Some("laptop"), t0)
            .is_ok());
    }

    #[test]
    fn the_devices_kept_are_capped_and_the_least_failed_go_first() {
        let t = Throttle::new(ThrottleConfig {
            max_devices: 64,
            ..ThrottleConfig::default()
        });
        let t0 = Instant::now();
        for _ in 0..6 {
            assert!(guess(&t, ip(1), Some("locked"), t0));
        }
        for i in 0..1000 {
            assert!(guess(&t, ip(1), Some(&format!("device{i}")), t0 + S / 2));
        }
        let devices = t.devices.lock();
        assert!(devices.entries.len() <= 64, "{}", devices.entries.len());
        assert!(devices.entries.contains_key("locked"));
        assert!(devices.entries.contains_key("device999"));
        drop(devices);
        assert!(!t
            .admit("account", "owner", ip(1), Some("locked"), t0 + S / 2)
            .unwrap()
            .trusted());
    }

    #[test]
    fn the_clock_moves_forward_when_told() {
        let t = Throttle::new(ThrottleConfig::default());
        let before = t.now();
        t.advance(15 * MIN);
        assert!(t.now() >= before + 15 * MIN);
    }
}
