//! The checkpoint thread: copies each tenant file's log into the file for its writers, one
//! file at a time, every `CHECKPOINT_EVERY` writes, instead of SQLite's automatic checkpoint.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::lock;
use super::registry::{Db, OpenPool};
use crate::db;

/// Writes between two checkpoints of a tenant file, in place of SQLite's automatic one (see
/// `db::init`). A created order puts about 13 pages into the log, so this is close to SQLite's
/// default of 1,000 pages for the busiest writes, and more often for smaller ones.
pub(super) const CHECKPOINT_EVERY: u64 = 64;

/// Who checkpoints tenant files (`serve --checkpoints`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Checkpoints {
    /// The checkpoint thread below, every `CHECKPOINT_EVERY` writes.
    #[default]
    Tenantd,
    /// None from tenantd: Litestream replicates the log and wants to be the one to copy it
    /// into the file and start it over, which it does beside its own read transaction. Closing
    /// a pool does not checkpoint while Litestream holds its connection to the file; without
    /// Litestream running, closing the last connection still does (SQLite's own), which
    /// Litestream takes for a restarted log when it comes back (a new snapshot, nothing lost).
    Litestream,
}

impl Checkpoints {
    pub fn parse(v: &str) -> Option<Checkpoints> {
        match v {
            "tenantd" => Some(Checkpoints::Tenantd),
            "litestream" => Some(Checkpoints::Litestream),
            _ => None,
        }
    }
}

impl OpenPool {
    /// Hands a checkpoint of this file to the registry's checkpoint thread, once: no writer
    /// copies the log in its own commit, writers wait only for the short rest of one (see
    /// [`checkpoint`]), and one file's checkpoints never queue up.
    pub(super) fn queue_checkpoint(self: &Arc<Self>) {
        let Some(checkpoints) = &self.checkpoints else {
            return;
        };
        if !self.checkpoint_queued.swap(true, Ordering::AcqRel) {
            // The thread lives as long as any pool can send; a failed send means the registry
            // is going away, and closing the last connection checkpoints anyway.
            let _ = checkpoints.send(Arc::downgrade(self));
        }
    }
}

/// The thread that checkpoints tenant files for their writers, one file at a time (they all
/// fsync, and a disk does those best one after another). It ends when every sender is gone:
/// the registry and all its pools.
pub(super) fn spawn_checkpointer(queue: Receiver<Weak<OpenPool>>) {
    let spawned = std::thread::Builder::new()
        .name("tenantd-checkpoint".into())
        .spawn(move || {
            for pool in queue {
                // A pool closed meanwhile was checkpointed by closing its last connection.
                let Some(pool) = pool.upgrade() else {
                    continue;
                };
                let retired = lock(&pool.retired);
                if *retired {
                    continue;
                }
                // A request made stale by the end of the last checkpoint (see `checkpoint`).
                // Cleared first: a write landing during this checkpoint may ask for another.
                if !pool.checkpoint_queued.swap(false, Ordering::AcqRel) {
                    continue;
                }
                let [_, wal, _] = db::database_files(&pool.path);
                let wal_bytes = std::fs::metadata(wal).map_or(0, |m| m.len());
                let done = checkpoint(&pool);
                pool.metrics.checkpoint(done.is_ok(), wal_bytes);
                match done {
                    Ok(()) => {
                        pool.checkpoints_done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => log::warn!("checkpoint of {} failed: {e}", pool.path.display()),
                }
                drop(retired);
            }
        });
    if let Err(e) = spawned {
        // Without the thread, logs grow until a pool closes (which checkpoints): degraded,
        // not broken.
        log::error!("could not start the checkpoint thread: {e}");
    }
}

/// Copies the log of a pool's file into the file, so that the log can start over.
///
/// SQLite starts the log over from its beginning only after a checkpoint that copied all of it,
/// and only when no reader still reads the old log. Writers queued back to back leave a
/// checkpoint beside them no moment at which it has copied everything, and readers keep
/// slots of the old log: the log grows for as long as the writes go on (gigabytes in a minute
/// of order creates). So the bulk is copied beside the writers, with its fsyncs; then, in a
/// write turn taken ahead of them, a RESTART checkpoint copies what they added meanwhile,
/// waits a moment for the readers of the old log, and starts it over itself. Writers wait for
/// that rest: a few writes' pages, two fsyncs and the readers' last microseconds, once every
/// `CHECKPOINT_EVERY` writes.
fn checkpoint(open: &OpenPool) -> Result<(), String> {
    // sqld checkpoints its own files; no checkpoint is ever queued for a namespace.
    let Db::File(files) = &open.db else {
        return Ok(());
    };
    let pool = open;
    // PASSIVE: copies what no reader still needs, never waits for anyone. Answers the frames
    // the log had when it began (not those added since). The connection goes back before the
    // turn is taken: writers take the turn first, then a connection.
    let logged: i64 = {
        let conn = files.get().map_err(|e| e.to_string())?;
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
            .map_err(|e| e.to_string())?
    };
    if logged == 0 {
        return Ok(());
    }
    let Some(turn) = pool.writer.take_first(db::BUSY_TIMEOUT) else {
        return Err(format!("no write turn within {:?}", db::BUSY_TIMEOUT));
    };
    let busy = files.get().map_err(|e| e.to_string()).and_then(|conn| {
        // Every writer waits meanwhile: a reader that holds on is waited for this long, and
        // the log starts over at a later checkpoint instead.
        conn.busy_timeout(RESTART_WAIT).map_err(|e| e.to_string())?;
        let busy = conn
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| {
                row.get::<_, i64>(0)
            })
            .map_err(|e| e.to_string());
        conn.busy_timeout(db::BUSY_TIMEOUT)
            .map_err(|e| e.to_string())?;
        busy
    });
    // Whatever was asked for meanwhile, this checkpoint did; a busy one is asked for again
    // after the next `CHECKPOINT_EVERY` writes.
    pool.checkpoint_queued.store(false, Ordering::Release);
    drop(turn);
    if busy? != 0 {
        log::debug!(
            "{}: readers kept the log from starting over",
            pool.path.display()
        );
    }
    Ok(())
}

/// How long a checkpoint that would start a log over waits for its last readers.
const RESTART_WAIT: Duration = Duration::from_millis(20);
