-- Login throttling's streaks (`auth::throttle`), kept here when several nodes share the
-- catalog, so that a client failing on one node counts on every other. Without a shared
-- catalog they stay in each process's memory and this table stays empty.
--
-- `key` is the SHA-256 (lower-case hex) of the budget's key (`<realm>:<account>`,
-- `ip:<address>`, or a known device's cookie nonce): account emails and device nonces are
-- not kept in clear. Times are unix milliseconds; `locked_until` is 0 until the streak first
-- locks. A streak is forgotten once a full window has passed since its last failure and the
-- end of its lock, whichever is later: the index finds those rows for the sweep.
--
-- Not counted in `catalog_changes` (no triggers, and the catalog's test lists it beside
-- audit_log and jobs): nothing kept is read from it, and counting it would drop every node's
-- kept reads on each failed login.

CREATE TABLE login_throttle (
    key          TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    last_failure INTEGER NOT NULL,
    locked_until INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;

CREATE INDEX login_throttle_quiet ON login_throttle (max(last_failure, locked_until));
