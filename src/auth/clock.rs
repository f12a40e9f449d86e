//! The wall clock sessions are judged by: the system's, plus an offset only tests move, so a
//! test of idle time or expiry moves time forward instead of sleeping through it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::catalog::unix_now;

/// Unix seconds; clones share one offset.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    ahead_secs: Arc<AtomicI64>,
}

impl Clock {
    pub fn now(&self) -> i64 {
        unix_now() + self.ahead_secs.load(Ordering::Relaxed)
    }

    /// Unix milliseconds, on the same offset: for what refills continuously (rate limits).
    pub fn now_millis(&self) -> i64 {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        since.as_millis() as i64 + self.ahead_millis()
    }

    /// How far tests moved this clock, in milliseconds.
    pub fn ahead_millis(&self) -> i64 {
        self.ahead_secs.load(Ordering::Relaxed) * 1000
    }

    /// Moves this clock (and its clones) forward. Only tests call it.
    pub fn advance(&self, secs: i64) {
        self.ahead_secs.fetch_add(secs, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_move_together_and_only_forward_by_what_they_are_told() {
        let clock = Clock::default();
        let clone = clock.clone();
        let before = clock.now();
        clone.advance(3600);
        let after = clock.now();
        assert!(
            (3600..3600 + 5).contains(&(after - before)),
            "{before} {after}"
        );
    }
}
