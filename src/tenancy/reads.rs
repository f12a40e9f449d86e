//! The answers cache of one open tenant pool: response bodies computed from the tenant's file,
//! kept while that file has not changed, so that reading the same thing again costs no SQLite
//! transaction.
//!
//! "Not changed" is the file's WAL-index header, read through a [`WalProbe`] (see `db::probe`):
//! it moves with every commit to the file, from this process or any other (`tenantd migrate`,
//! the CLI, a `sqlite3` shell). A lookup reads the header first, and a miss hands it to the
//! caller, who computes the answer; the answer is only kept if the header still reads the same
//! afterwards, so an answer that a commit may have overtaken is never kept. Every kept answer
//! belongs to the one current header: the first answer kept after a commit drops all the others
//! at once. Nothing is invalidated by hand, so no write path can forget to.
//!
//! What goes into the key is the caller's duty: everything besides the file that the answer
//! depends on (the route and query, the reader's id and permissions).
//!
//! Memory is bounded by one budget shared by every pool of the registry
//! (`RegistryConfig::read_cache_bytes`). A pool over it makes room from its own answers, in
//! CLOCK order (the oldest first, but one that was read since it was kept gets another round);
//! a closed pool gives all of its back.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use crate::db::probe::{Header, WalProbe};

/// What a lookup found.
pub enum Lookup {
    Hit(Arc<[u8]>),
    /// Compute the answer, then hand it to `keep` with this ticket.
    Miss(Ticket),
}

/// A miss's key and the header read before anything was computed.
pub struct Ticket {
    key: String,
    header: Option<Header>,
}

struct Entry {
    body: Arc<[u8]>,
    /// Read since it was kept, or since the clock hand last passed it.
    referenced: bool,
}

#[derive(Default)]
struct Entries {
    /// The header every entry was computed under.
    header: Option<Header>,
    map: HashMap<Arc<str>, Entry>,
    /// Keys in the order they were kept: the clock.
    order: VecDeque<Arc<str>>,
    bytes: usize,
}

/// Bytes an entry is charged beyond its key and body (the map's slot, the clock's, the `Arc`s).
const ENTRY_OVERHEAD: usize = 96;

/// A share of the budget one answer may take at most: one huge page must not push out
/// everything else.
const MAX_SHARE: usize = 16;

fn cost(key: &str, body: &[u8]) -> usize {
    key.len() + body.len() + ENTRY_OVERHEAD
}

/// The registry's budget and what all of its pools hold against it.
#[derive(Clone)]
pub(super) struct Budget {
    limit: usize,
    used: Arc<AtomicUsize>,
}

impl Budget {
    pub(super) fn new(limit: usize) -> Budget {
        Budget {
            limit,
            used: Arc::new(AtomicUsize::new(0)),
        }
    }

    #[cfg(test)]
    pub(super) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

pub(super) struct ReadCache {
    budget: Budget,
    /// `None` when the cache is off, or the file has no WAL index to map: then nothing is kept.
    probe: Option<WalProbe>,
    entries: Mutex<Entries>,
}

impl ReadCache {
    /// For the database `conn` is open to, which must stay open for as long as this cache
    /// lives (see `db::probe`).
    pub(super) fn new(budget: Budget, conn: &Connection) -> ReadCache {
        let probe = if budget.limit == 0 {
            None
        } else {
            WalProbe::attach(conn)
        };
        ReadCache {
            budget,
            probe,
            entries: Mutex::new(Entries::default()),
        }
    }

    /// A cache that keeps nothing: for a tenant with no local file whose changes it could see
    /// (one kept on sqld, where another node may write at any time).
    pub(super) fn off(budget: Budget) -> ReadCache {
        ReadCache {
            budget,
            probe: None,
            entries: Mutex::new(Entries::default()),
        }
    }

    pub(super) fn lookup(&self, key: String, fresh: bool) -> Lookup {
        let header = self.probe.as_ref().map(WalProbe::read);
        if header.is_some() && !fresh {
            let mut entries = super::lock(&self.entries);
            if entries.header == header {
                if let Some(entry) = entries.map.get_mut(key.as_str()) {
                    entry.referenced = true;
                    return Lookup::Hit(Arc::clone(&entry.body));
                }
            }
        }
        Lookup::Miss(Ticket { key, header })
    }

    /// Keeps `body` for the ticket's key if the file is still as it was when the ticket was
    /// made.
    pub(super) fn keep(&self, ticket: Ticket, body: &[u8]) {
        let Some(probe) = &self.probe else {
            return;
        };
        let now = probe.read();
        if ticket.header != Some(now) {
            return;
        }
        let cost = cost(&ticket.key, body);
        if cost > self.budget.limit / MAX_SHARE {
            return;
        }
        let mut entries = super::lock(&self.entries);
        if entries.header != Some(now) {
            // A commit since the answers held were computed: none of them can be served again.
            self.clear(&mut entries);
            entries.header = Some(now);
        }
        if entries.map.contains_key(ticket.key.as_str()) {
            // Kept by a concurrent miss under the same header: the same answer.
            return;
        }
        while self.budget.used.load(Ordering::Relaxed) + cost > self.budget.limit {
            if !self.evict_one(&mut entries) {
                // Other pools hold the budget; theirs go when they close.
                return;
            }
        }
        self.budget.used.fetch_add(cost, Ordering::Relaxed);
        entries.bytes += cost;
        let key: Arc<str> = Arc::from(ticket.key);
        entries.order.push_back(Arc::clone(&key));
        entries.map.insert(
            key,
            Entry {
                body: Arc::from(body),
                referenced: false,
            },
        );
    }

    /// Drops the next victim of the clock; false when there is nothing to drop.
    fn evict_one(&self, entries: &mut Entries) -> bool {
        while let Some(key) = entries.order.pop_front() {
            let Some(entry) = entries.map.get_mut(&key) else {
                continue;
            };
            if entry.referenced {
                entry.referenced = false;
                entries.order.push_back(key);
                continue;
            }
            if let Some(entry) = entries.map.remove(&key) {
                let cost = cost(&key, &entry.body);
                entries.bytes -= cost;
                self.budget.used.fetch_sub(cost, Ordering::Relaxed);
            }
            return true;
        }
        false
    }

    fn clear(&self, entries: &mut Entries) {
        self.budget.used.fetch_sub(entries.bytes, Ordering::Relaxed);
        entries.map.clear();
        entries.order.clear();
        entries.bytes = 0;
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> (usize, usize) {
        let entries = super::lock(&self.entries);
        (entries.map.len(), entries.bytes)
    }
}

impl Drop for ReadCache {
    fn drop(&mut self) {
        let mut entries = super::lock(&self.entries);
        self.clear(&mut entries);
    }
}
