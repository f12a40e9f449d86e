//! Login throttling's streaks in the catalog (`login_throttle`, 0012), for nodes that share
//! it: `auth::throttle` keeps the rules and the in-memory streaks; this module stores a
//! streak under the digest of its key and counts a failure in one statement, so that two
//! nodes failing the same key at once both count. Writes are uncounted: nothing kept is read
//! from the table.

use sha2::{Digest, Sha256};

use super::{Catalog, CatalogError};
use crate::args;

/// What a failure does to a streak (the throttle's config, in unix milliseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreakRules {
    /// Failures in a streak that cost nothing.
    pub free_failures: u32,
    /// A streak quiet this long (since its last failure and the end of its lock) is over.
    pub window_ms: i64,
    /// The first lock, doubled by each further failure.
    pub first_backoff_ms: i64,
    /// The longest lock.
    pub max_backoff_ms: i64,
}

/// Rows the sweep deletes at most at once: each failure adds two rows at most, and a sweep
/// comes with one failure in `auth::throttle`'s `SWEEP_EVERY`, so it keeps up while bounded.
pub const SWEEP_LIMIT: i64 = 1024;

/// The doubling stops there (2^40 times the first lock is past any lock kept anyway).
const MAX_SHIFT: i64 = 40;

/// How a budget's key is stored: emails and device nonces are not kept in clear.
fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// One failure on a streak, computed from its old row in the statement itself: a streak
/// quiet past the window starts again; past the free failures, the lock is the first
/// backoff doubled per further failure, capped, and never shortened (a failure from another
/// node may land after one with a later clock).
const FAILURE: &str = "
WITH old AS (
    SELECT failures, last_failure, locked_until FROM login_throttle
    WHERE key = ?1 AND max(last_failure, locked_until) > ?3
),
streak AS (
    SELECT coalesce((SELECT failures FROM old), 0) + 1 AS failures,
           max(coalesce((SELECT last_failure FROM old), ?2), ?2) AS last_failure,
           coalesce((SELECT locked_until FROM old), 0) AS locked_until
)
INSERT INTO login_throttle (key, failures, last_failure, locked_until)
SELECT ?1, failures, last_failure,
       CASE WHEN failures > ?4
            THEN max(locked_until, ?2 + min(?5 << min(failures - ?4 - 1, ?7), ?6))
            ELSE locked_until END
FROM streak WHERE true
ON CONFLICT (key) DO UPDATE SET
    failures = excluded.failures,
    last_failure = excluded.last_failure,
    locked_until = excluded.locked_until";

impl Catalog {
    /// The end of each key's lock (unix ms), in the order of `keys`; 0 for a key with no
    /// streak or one that never locked. A streak past its window may still be read here
    /// until swept: its lock has ended, so it locks nothing.
    pub fn throttle_locks(&self, keys: &[&str]) -> Result<Vec<i64>, CatalogError> {
        let digests: Vec<String> = keys.iter().map(|key| digest(key)).collect();
        let list = serde_json::to_string(&digests).unwrap_or_default();
        // One statement for the two or three keys of an attempt: one round trip on sqld.
        let found = self.read(|db| {
            db.query_map(
                "SELECT key, locked_until FROM login_throttle
                 WHERE key IN (SELECT value FROM json_each(?1))",
                args![list],
                |row| Ok((row.get::<String>(0)?, row.get::<i64>(1)?)),
            )
            .map_err(CatalogError::from)
        })?;
        Ok(digests
            .iter()
            .map(|d| {
                found
                    .iter()
                    .find(|(k, _)| k == d)
                    .map_or(0, |(_, until)| *until)
            })
            .collect())
    }

    /// Counts one failure at `now_ms` against each of `keys`, in one transaction; with
    /// `sweep`, first deletes up to [`SWEEP_LIMIT`] streaks over by `now_ms`.
    pub fn throttle_failure(
        &self,
        keys: &[&str],
        now_ms: i64,
        rules: &StreakRules,
        sweep: bool,
    ) -> Result<(), CatalogError> {
        let over_before = now_ms.saturating_sub(rules.window_ms);
        self.write_uncounted_sql(|db| {
            if sweep {
                db.execute(
                    "DELETE FROM login_throttle WHERE key IN (
                         SELECT key FROM login_throttle
                         WHERE max(last_failure, locked_until) <= ?1 LIMIT ?2)",
                    args![over_before, SWEEP_LIMIT],
                )?;
            }
            for key in keys {
                db.execute(
                    FAILURE,
                    args![
                        digest(key),
                        now_ms,
                        over_before,
                        rules.free_failures,
                        rules.first_backoff_ms,
                        rules.max_backoff_ms,
                        MAX_SHIFT
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// Ends `key`'s streak (a known device's successful login).
    pub fn throttle_forget(&self, key: &str) -> Result<(), CatalogError> {
        self.write_uncounted_sql(|db| {
            db.execute(
                "DELETE FROM login_throttle WHERE key = ?1",
                args![digest(key)],
            )?;
            Ok(())
        })
    }

    /// The streak stored for `key` (failures, last failure, end of lock), for tests.
    #[cfg(test)]
    pub(crate) fn throttle_streak(&self, key: &str) -> Option<(i64, i64, i64)> {
        self.read(|db| {
            db.query_row(
                "SELECT failures, last_failure, locked_until FROM login_throttle WHERE key = ?1",
                args![digest(key)],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .map_err(CatalogError::from)
        })
        .unwrap()
    }

    /// Every stored key (digests), for tests.
    #[cfg(test)]
    pub(crate) fn throttle_keys(&self) -> Vec<String> {
        self.read(|db| {
            db.query_map("SELECT key FROM login_throttle ORDER BY key", &[], |row| {
                row.get(0)
            })
            .map_err(CatalogError::from)
        })
        .unwrap()
    }
}
