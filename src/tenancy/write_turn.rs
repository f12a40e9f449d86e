//! Write turns: how this process's writers to one tenant file queue for it, in place of
//! SQLite's busy handler, with a way for the checkpoint thread to go ahead of them.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::lock;

/// This process's writers to one tenant file take turns here instead of at SQLite's write
/// lock, where a writer that finds the lock taken sleeps in the busy handler (1 ms, then 2, 5,
/// 10, ... however soon the lock frees): that put hundreds of milliseconds into the tail of
/// busy tenants. A condition variable wakes the next writer as soon as the last one commits.
/// Other processes (`tenantd migrate`, the CLI) still meet the busy timeout.
#[derive(Default)]
pub(super) struct WriteTurn {
    state: Mutex<TurnState>,
    /// Writers wait here.
    freed: Condvar,
    /// The one `take_first` caller waits here.
    freed_first: Condvar,
}

#[derive(Default)]
struct TurnState {
    taken: bool,
    /// Someone waits in `take_first`: writers let them go ahead.
    first_waiting: bool,
}

pub(super) struct Turn<'a>(&'a WriteTurn);

impl WriteTurn {
    /// The turn, or `None` after `wait`.
    pub(super) fn take(&self, wait: Duration) -> Option<Turn<'_>> {
        let (mut state, _) = self
            .freed
            .wait_timeout_while(lock(&self.state), wait, |s| s.taken || s.first_waiting)
            .unwrap_or_else(|e| e.into_inner());
        if state.taken || state.first_waiting {
            return None;
        }
        state.taken = true;
        Some(Turn(self))
    }

    /// The turn ahead of every waiting writer, or `None` after `wait`. A writer that just gave
    /// the turn back is often first to take it again, so a plain `take` among busy writers
    /// can wait out its whole `wait`. For one caller at a time (the checkpoint thread).
    pub(super) fn take_first(&self, wait: Duration) -> Option<Turn<'_>> {
        let mut state = lock(&self.state);
        state.first_waiting = true;
        let (mut state, _) = self
            .freed_first
            .wait_timeout_while(state, wait, |s| s.taken)
            .unwrap_or_else(|e| e.into_inner());
        state.first_waiting = false;
        if state.taken {
            // Writers may sleep only because of the flag.
            self.freed.notify_all();
            return None;
        }
        state.taken = true;
        Some(Turn(self))
    }
}

/// Also on a panic in the writer's closure: the turn is never lost.
impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.taken = false;
        if state.first_waiting {
            self.0.freed_first.notify_one();
        } else {
            self.0.freed.notify_one();
        }
    }
}
