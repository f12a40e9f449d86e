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
//!
//! The streaks live in this process's memory, or, when several nodes share the catalog
//! ([`Throttle::shared`]), in the catalog (`catalog::throttle`), so that a client failing on
//! one node counts on every other; the rules are the same.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::catalog::{Catalog, CatalogError, StreakRules};

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
    /// In memory only: in the catalog, devices' streaks are bounded by the window like the
    /// others (a device's key is a nonce only a successful login hands out).
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
/// In the catalog, one failure in this many (per node, the first included) also sweeps the
/// streaks that are over (at most `catalog::throttle::SWEEP_LIMIT` rows).
const SWEEP_EVERY: usize = 64;

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
    /// With a catalog several nodes share, the streaks are kept there; the two maps above then
    /// stand in only while it does not answer.
    store: Option<Store>,
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
            store: None,
        }
    }

    /// A throttle whose streaks are kept in `catalog`, for nodes that share it: a failure on
    /// any node counts on all of them. Times there are unix milliseconds, so the nodes' clocks
    /// must agree (as they must for sessions' expiry); the throttle's own clock (`now`,
    /// `advance`) maps onto them from the moment it is made.
    pub fn shared(config: ThrottleConfig, catalog: Arc<Catalog>) -> Throttle {
        let rules = StreakRules {
            free_failures: config.free_failures,
            window_ms: millis(config.window),
            first_backoff_ms: millis(FIRST_BACKOFF),
            max_backoff_ms: millis(config.max_backoff.min(BACKOFF_LIMIT)),
        };
        let mut throttle = Throttle::new(config);
        throttle.store = Some(Store {
            catalog,
            rules,
            epoch: (throttle.now(), unix_ms_now()),
            failures: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
        });
        throttle
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
        let stored = self
            .store
            .as_ref()
            .and_then(|store| store.locks(&attempt, device, now));
        if let Some(device) = device {
            let locked = match &stored {
                Some(locks) => locks.device,
                None => self.devices.check(device, now).err(),
            };
            if locked.is_none() {
                attempt.device = Some(device.to_owned());
                return Ok(attempt);
            }
        }
        let (account, address) = match &stored {
            Some(locks) => (locks.account, locks.address),
            None => (
                self.shared.check(&attempt.account, now).err(),
                self.shared.check(&attempt.address, now).err(),
            ),
        };
        match account.max(address) {
            None => Ok(attempt),
            Some(wait) => Err(wait),
        }
    }

    /// Records a failed attempt against the budgets it counts against.
    pub fn failure(&self, attempt: &Attempt, now: Instant) {
        if let Some(store) = &self.store {
            if store.failure(attempt, now).is_some() {
                return;
            }
        }
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
            if let Some(store) = &self.store {
                store.answered(store.catalog.throttle_forget(&device_key(device)));
            }
            self.devices.success(device);
        }
    }
}

/// The streaks in a shared catalog.
///
/// When the catalog fails (busy past the wait, unreachable), the throttle neither fails open
/// nor closed: it logs and counts in this node's memory until the catalog answers again. Failing
/// closed would refuse every login, including every known device's, for as long as the catalog
/// errs, and a flood of failed logins that keeps the catalog busy would then lock everyone
/// out; failing open would let a guesser go unthrottled for as long. In memory, the budgets
/// still hold, per node, as they do without a shared catalog; a login itself never fails
/// because of the throttle's table.
struct Store {
    catalog: Arc<Catalog>,
    rules: StreakRules,
    /// A reading of the throttle's clock and the unix time (ms) it stands for.
    epoch: (Instant, i64),
    /// Failures counted through this node, for the sweep.
    failures: AtomicUsize,
    /// Whether the catalog's last answer was an error: the change is logged, not each error.
    failing: AtomicBool,
}

/// Which of an attempt's budgets are locked, and for how long.
struct Locks {
    account: Option<Duration>,
    address: Option<Duration>,
    device: Option<Duration>,
}

/// A known device's key in the catalog, apart from the `<realm>:` and `ip:` keys that share
/// the table (a nonce never holds a colon, but the key space should not rely on it).
fn device_key(nonce: &str) -> String {
    format!("device:{nonce}")
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A clock before 1970 is a broken host; the epoch is a harmless stand-in.
fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

impl Store {
    /// `at`, a reading of the throttle's clock, in unix milliseconds.
    fn unix_ms(&self, at: Instant) -> i64 {
        let (instant, ms) = self.epoch;
        match at.checked_duration_since(instant) {
            Some(after) => ms.saturating_add(millis(after)),
            None => ms.saturating_sub(millis(instant - at)),
        }
    }

    /// The locks on the attempt's budgets, or `None` when the catalog did not answer.
    fn locks(&self, attempt: &Attempt, device: Option<&str>, now: Instant) -> Option<Locks> {
        let device = device.map(device_key);
        let mut keys = vec![attempt.account.as_str(), attempt.address.as_str()];
        keys.extend(device.as_deref());
        let until = self.answered(self.catalog.throttle_locks(&keys))?;
        let now = self.unix_ms(now);
        let wait = |until: i64| {
            (until > now).then(|| Duration::from_millis(u64::try_from(until - now).unwrap_or(0)))
        };
        Some(Locks {
            account: wait(until[0]),
            address: wait(until[1]),
            device: until.get(2).and_then(|until| wait(*until)),
        })
    }

    /// Counts a failure in the catalog; `None` when it did not answer.
    fn failure(&self, attempt: &Attempt, now: Instant) -> Option<()> {
        let device = attempt.device.as_deref().map(device_key);
        let keys = match &device {
            Some(device) => vec![device.as_str()],
            None => vec![attempt.account.as_str(), attempt.address.as_str()],
        };
        let sweep = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SWEEP_EVERY);
        let now = self.unix_ms(now);
        self.answered(
            self.catalog
                .throttle_failure(&keys, now, &self.rules, sweep),
        )
    }

    /// The catalog's answer, or `None` after logging its error (once, until it answers again).
    fn answered<T>(&self, result: Result<T, CatalogError>) -> Option<T> {
        match result {
            Ok(value) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    log::info!("login throttling: the catalog answers again");
                }
                Some(value)
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "login throttling: {e}; counting in this node's memory until the \
                         catalog answers again"
                    );
                }
                None
            }
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

    // Shared: the streaks in a catalog several nodes use.

    fn frozen() -> ThrottleConfig {
        ThrottleConfig {
            frozen_clock: true,
            ..ThrottleConfig::default()
        }
    }

    fn open_catalog() -> (tempfile::TempDir, Arc<Catalog>) {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path(), crate::db::Create::IfMissing).unwrap();
        (dir, Arc::new(catalog))
    }

    /// Two nodes on one catalog, their clocks agreeing to the millisecond (as NTP keeps real
    /// nodes' within a few).
    fn nodes(catalog: &Arc<Catalog>) -> (Throttle, Throttle) {
        let a = Throttle::shared(frozen(), catalog.clone());
        let mut b = Throttle::shared(frozen(), catalog.clone());
        b.frozen_at = a.frozen_at;
        b.store.as_mut().unwrap().epoch = a.store.as_ref().unwrap().epoch;
        (a, b)
    }

    /// Moves both nodes' clocks on.
    fn advance(nodes: &(Throttle, Throttle), by: Duration) {
        nodes.0.advance(by);
        nodes.1.advance(by);
    }

    fn sha256(key: &str) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(key.as_bytes()))
    }

    #[test]
    fn failures_through_one_node_lock_the_account_on_the_other() {
        let (_dir, catalog) = open_catalog();
        let (a, b) = nodes(&catalog);
        // Three failures through each node, from six addresses: the sixth locks.
        for i in 0..6 {
            let node = if i % 2 == 0 { &a } else { &b };
            assert!(guess(node, ip(i), None, node.now()), "guess {}", i + 1);
        }
        assert_eq!(b.admit("account", "owner", ip(99), None, b.now()), Err(S));
        assert_eq!(a.admit("account", "owner", ip(99), None, a.now()), Err(S));
        // The in-memory streaks were not used.
        assert!(a.shared.lock().entries.is_empty());
        assert!(b.shared.lock().entries.is_empty());
        // Other accounts are free; the owner's device gets in through either node.
        assert!(b.admit("account", "eve", ip(99), None, b.now()).is_ok());
        assert!(b
            .admit("account", "owner", ip(0), Some("laptop"), b.now())
            .unwrap()
            .trusted());
        // An address that failed six times through two nodes is locked for every account.
        let (_dir, catalog) = open_catalog();
        let (a, b) = nodes(&catalog);
        for i in 0..6 {
            let node = if i < 3 { &a } else { &b };
            let attempt = node
                .admit("account", &format!("user{i}"), ip(1), None, node.now())
                .unwrap();
            node.failure(&attempt, node.now());
        }
        assert_eq!(a.admit("account", "x", ip(1), None, a.now()), Err(S));
        assert!(a.admit("account", "x", ip(2), None, a.now()).is_ok());
    }

    #[test]
    fn a_known_devices_success_on_one_node_ends_its_streak_on_the_other() {
        let (_dir, catalog) = open_catalog();
        let nodes = nodes(&catalog);
        let (a, b) = &nodes;
        for _ in 0..6 {
            assert!(guess(a, ip(1), Some("laptop"), a.now()));
        }
        // Locked on both nodes: the device counts as unknown there.
        assert!(!b
            .admit("account", "owner", ip(1), Some("laptop"), b.now())
            .unwrap()
            .trusted());
        // Its lock runs out; it logs in through B, and A sees its streak over.
        advance(&nodes, S);
        let known = b
            .admit("account", "owner", ip(1), Some("laptop"), b.now())
            .unwrap();
        assert!(known.trusted());
        b.success(&known);
        assert_eq!(catalog.throttle_streak("device:laptop"), None);
        for i in 0..5 {
            assert!(guess(a, ip(1), Some("laptop"), a.now()), "free failure {i}");
        }
        assert!(a
            .admit("account", "owner", ip(1), Some("laptop"), a.now())
            .unwrap()
            .trusted());
        assert!(guess(a, ip(1), Some("laptop"), a.now()));
        assert!(!b
            .admit("account", "owner", ip(1), Some("laptop"), b.now())
            .unwrap()
            .trusted());
    }

    /// Two nodes whose clocks both stand `by` after their creation.
    fn nodes_after(catalog: &Arc<Catalog>, by: Duration) -> (Throttle, Throttle) {
        let nodes = nodes(catalog);
        advance(&nodes, by);
        nodes
    }

    #[test]
    fn a_shared_lock_runs_out_doubles_and_is_capped_as_the_clocks_advance() {
        let (_dir, catalog) = open_catalog();
        let nodes = nodes(&catalog);
        let (a, b) = &nodes;
        for i in 0..6 {
            assert!(guess(a, ip(i), None, a.now()));
        }
        advance(&nodes, S / 4);
        assert_eq!(
            b.admit("account", "owner", ip(9), None, b.now()),
            Err(S * 3 / 4)
        );
        advance(&nodes, S * 3 / 4);
        let mut expected = 2 * S;
        for _ in 0..15 {
            assert!(guess(b, ip(9), None, b.now()));
            assert_eq!(
                a.admit("account", "owner", ip(10), None, a.now()),
                Err(expected)
            );
            advance(&nodes, expected);
            expected = (expected * 2).min(15 * MIN);
        }
        assert_eq!(expected, 15 * MIN);
    }

    #[test]
    fn the_shared_window_forgets_counting_from_the_end_of_a_lock() {
        let (_dir, catalog) = open_catalog();
        let nodes = nodes(&catalog);
        let (a, b) = &nodes;
        for _ in 0..5 {
            assert!(guess(a, ip(1), None, a.now()));
        }
        // One second short of the window: the streak goes on.
        advance(&nodes, 15 * MIN - S);
        assert!(guess(b, ip(2), None, b.now()));
        assert_eq!(a.admit("account", "owner", ip(3), None, a.now()), Err(S));
        // The lock ends, but a quiet window has not passed since: the next failure locks.
        advance(&nodes, 14 * MIN);
        assert!(guess(a, ip(3), None, a.now()));
        assert_eq!(
            b.admit("account", "owner", ip(4), None, b.now()),
            Err(2 * S)
        );
        // A full window after the end of that lock: forgotten, five free failures again.
        advance(&nodes, 2 * S + 15 * MIN);
        for i in 0..5 {
            assert!(guess(b, ip(5), None, b.now()), "free failure {i}");
            assert!(a.admit("account", "owner", ip(6), None, a.now()).is_ok());
        }
        assert!(guess(b, ip(5), None, b.now()));
        assert_eq!(a.admit("account", "owner", ip(6), None, a.now()), Err(S));
    }

    #[test]
    fn streaks_that_are_over_are_swept_and_live_ones_kept() {
        let (_dir, catalog) = open_catalog();
        let (a, _) = nodes(&catalog);
        for i in 0..50 {
            let attempt = a
                .admit("account", &format!("user{i}"), ip(i), None, a.now())
                .unwrap();
            a.failure(&attempt, a.now());
        }
        // 100 rows: 50 accounts and 50 addresses; then one more, a minute before the window.
        assert_eq!(catalog.throttle_keys().len(), 100);
        a.advance(14 * MIN);
        let late = a.admit("account", "late", ip(1), None, a.now()).unwrap();
        a.failure(&late, a.now());
        // A window later, a node's first failure sweeps them; its own streaks stay.
        let (b, _) = nodes_after(&catalog, 15 * MIN);
        assert!(b.admit("account", "other", ip(200), None, b.now()).is_ok());
        let attempt = b.admit("account", "other", ip(200), None, b.now()).unwrap();
        b.failure(&attempt, b.now());
        assert_eq!(catalog.throttle_keys(), {
            let mut keys = vec![
                sha256("account:other"),
                sha256("ip:192.0.2.200"),
                sha256("account:late"),
                sha256("ip:192.0.2.1"),
            ];
            keys.sort();
            keys
        });
    }

    #[test]
    fn a_failure_through_a_node_whose_clock_is_behind_never_shortens_a_lock() {
        let (_dir, catalog) = open_catalog();
        let (a, b) = nodes(&catalog);
        a.advance(MIN);
        // Twenty failures admitted before the first lock: the last locks for the longest.
        let attempt = a.admit("account", "owner", ip(1), None, a.now()).unwrap();
        for _ in 0..20 {
            a.failure(&attempt, a.now());
        }
        assert_eq!(
            a.admit("account", "owner", ip(2), None, a.now()),
            Err(15 * MIN)
        );
        b.failure(&attempt, b.now());
        assert_eq!(
            a.admit("account", "owner", ip(2), None, a.now()),
            Err(15 * MIN)
        );
        assert_eq!(catalog.throttle_streak("account:owner").unwrap().0, 21);
    }

    #[test]
    fn a_node_counts_in_its_memory_while_the_catalog_fails() {
        let (_dir, catalog) = open_catalog();
        let (a, b) = nodes(&catalog);
        assert!(guess(&a, ip(1), None, a.now()));
        rusqlite::Connection::open(catalog.data_dir().join(crate::catalog::CENTRAL_DB))
            .unwrap()
            .execute_batch("DROP TABLE login_throttle")
            .unwrap();
        // Attempts are still admitted, and counted per node: B locks after its own six.
        for i in 0..6 {
            assert!(guess(&b, ip(1), None, b.now()), "failure {}", i + 1);
        }
        assert_eq!(b.admit("account", "owner", ip(2), None, b.now()), Err(S));
        assert!(a.admit("account", "owner", ip(2), None, a.now()).is_ok());
        assert_eq!(b.shared.lock().entries.len(), 2);
        let device = b
            .admit("account", "owner", ip(2), Some("laptop"), b.now())
            .unwrap();
        b.success(&device);
    }

    #[test]
    fn the_catalog_keeps_digests_of_the_keys_not_the_emails() {
        let (_dir, catalog) = open_catalog();
        let (a, _) = nodes(&catalog);
        let attempt = a
            .admit("account", "owner@example.com", ip(1), None, a.now())
            .unwrap();
        a.failure(&attempt, a.now());
        let device = a
            .admit(
                "admin",
                "root@example.com",
                ip(1),
                Some("nonce123"),
                a.now(),
            )
            .unwrap();
        a.failure(&device, a.now());
        let keys = catalog.throttle_keys();
        let mut expected = vec![
            sha256("account:owner@example.com"),
            sha256("ip:192.0.2.1"),
            sha256("device:nonce123"),
        ];
        expected.sort();
        assert_eq!(keys, expected);
        let file = std::fs::read(catalog.data_dir().join(crate::catalog::CENTRAL_DB)).unwrap();
        let wal = std::fs::read(catalog.data_dir().join("central.db-wal")).unwrap_or_default();
        for clear in ["owner@example.com", "nonce123", "192.0.2.1"] {
            for bytes in [&file, &wal] {
                assert!(
                    !bytes.windows(clear.len()).any(|w| w == clear.as_bytes()),
                    "{clear} stored in clear"
                );
            }
        }
    }

    #[test]
    fn concurrent_failures_on_two_nodes_all_count() {
        let (_dir, catalog) = open_catalog();
        let (a, b) = nodes(&catalog);
        let threads: Vec<_> = [a, b]
            .into_iter()
            .map(|node| {
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        let attempt = node
                            .admit("account", "owner", ip(1), None, node.now())
                            .unwrap_or_else(|_| Attempt {
                                account: "account:owner".into(),
                                address: "ip:192.0.2.1".into(),
                                device: None,
                            });
                        node.failure(&attempt, node.now());
                    }
                })
            })
            .collect();
        for handle in threads {
            handle.join().unwrap();
        }
        let (failures, _, _) = catalog.throttle_streak("account:owner").unwrap();
        assert_eq!(failures, 50);
        let (failures, _, _) = catalog.throttle_streak("ip:192.0.2.1").unwrap();
        assert_eq!(failures, 50);
    }

    /// The same attempts through an in-memory throttle and a shared one get the same answers.
    #[test]
    fn shared_and_in_memory_streaks_follow_the_same_rules() {
        let (_dir, catalog) = open_catalog();
        let config = ThrottleConfig {
            free_failures: 2,
            window: MIN,
            max_backoff: 10 * S,
            ..frozen()
        };
        let memory = Throttle::new(config.clone());
        let shared = Throttle::shared(config, catalog);
        // A fixed pseudo-random walk: waits from none to past the window, two devices and
        // none, two addresses, now and then a success.
        let waits = [0, 0, 0, 250, 1_000, 3_000, 20_000, 61_000];
        let devices = [None, None, Some("dev"), Some("dev2")];
        let mut seed = 7u64;
        let mut seen = [0; 3];
        for step in 0..400 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let r = (seed >> 33) as usize;
            let device = devices[r % 4];
            let address = ip(1 + (r / 4 % 2) as u8);
            let wait = Duration::from_millis(waits[r / 8 % 8]);
            let succeeds = (r / 64).is_multiple_of(7);
            let mut answers = Vec::new();
            for t in [&memory, &shared] {
                t.advance(wait);
                let answer = t.admit("account", "owner", address, device, t.now());
                if let Ok(attempt) = &answer {
                    if succeeds {
                        t.success(attempt);
                    } else {
                        t.failure(attempt, t.now());
                    }
                }
                answers.push(answer.map(|a| a.trusted()));
            }
            assert_eq!(answers[0], answers[1], "step {step}");
            seen[match answers[0] {
                Ok(true) => 0,
                Ok(false) => 1,
                Err(_) => 2,
            }] += 1;
        }
        assert!(seen.iter().all(|n| *n > 20), "{seen:?}");
    }

    #[test]
    fn the_clock_moves_forward_when_told() {
        let t = Throttle::new(ThrottleConfig::default());
        let before = t.now();
        t.advance(15 * MIN);
        assert!(t.now() >= before + 15 * MIN);
    }
}
