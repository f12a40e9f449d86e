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
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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
    /// Made once a connection to the file is open (see `db::probe` for why it must be).
    probe: OnceLock<WalProbe>,
    entries: Mutex<Entries>,
}

impl ReadCache {
    pub(super) fn new(budget: Budget) -> ReadCache {
        ReadCache {
            budget,
            probe: OnceLock::new(),
            entries: Mutex::new(Entries::default()),
        }
    }

    pub(super) fn lookup(&self, key: String, fresh: bool) -> Lookup {
        if self.budget.limit == 0 {
            return Lookup::Miss(Ticket { key, header: None });
        }
        let header = self.probe.get().map(WalProbe::read);
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
    /// made. `connected`: whether the pool holds an open connection to `path` (the condition
    /// for mapping its header, which is done here on first use; only asked until then).
    pub(super) fn keep(
        &self,
        ticket: Ticket,
        body: &[u8],
        path: &Path,
        connected: impl FnOnce() -> bool,
    ) {
        if self.budget.limit == 0 {
            return;
        }
        let Some(probe) = self.probe.get() else {
            if connected() {
                if let Some(probe) = WalProbe::open(path) {
                    // A racing thread may have set one first: either maps the same file.
                    let _ = self.probe.set(probe);
                }
            }
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
