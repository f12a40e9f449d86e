//! The answers cache of one open tenant pool: response bodies computed from the tenant's file,
//! kept while that file has not changed, so that reading the same thing again costs no SQLite
//! transaction.
//!
//! "Not changed" is the file's WAL-index header, read through a [`WalProbe`] (see `db::probe`):
//! it moves with every commit to the file, from this process or any other (`tenantd migrate`,
//! the CLI, a `sqlite3` shell). A lookup reads the header first and a miss hands it to the
//! caller, who computes the answer and keeps it under *that* header: a commit landing while the
//! answer is computed moves the header past it, so the answer is never served for a later state
//! of the file. Nothing is ever invalidated by hand, so no write path can forget to.
//!
//! What goes into the key is the caller's duty: everything besides the file that the answer
//! depends on (the route and query, the reader's id and permissions).
//!
//! Memory is bounded per pool (`RegistryConfig::read_cache_bytes`); the least recently used
//! answers go first, and the whole cache goes with the pool.

use std::collections::HashMap;
use std::path::Path;
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
    header: Header,
    body: Arc<[u8]>,
    used: u64,
}

#[derive(Default)]
struct Entries {
    map: HashMap<String, Entry>,
    bytes: usize,
    clock: u64,
}

/// Bytes an entry is charged beyond its key and body (the map's slot, the `Arc`).
const ENTRY_OVERHEAD: usize = 96;

pub(super) struct ReadCache {
    budget: usize,
    /// Made once a connection to the file is open (see `db::probe` for why it must be).
    probe: OnceLock<WalProbe>,
    entries: Mutex<Entries>,
}

impl ReadCache {
    pub(super) fn new(budget: usize) -> ReadCache {
        ReadCache {
            budget,
            probe: OnceLock::new(),
            entries: Mutex::new(Entries::default()),
        }
    }

    pub(super) fn lookup(&self, key: String) -> Lookup {
        if self.budget == 0 {
            return Lookup::Miss(Ticket { key, header: None });
        }
        let header = self.probe.get().map(WalProbe::read);
        if let Some(header) = header {
            let mut entries = super::lock(&self.entries);
            entries.clock += 1;
            let clock = entries.clock;
            if let Some(entry) = entries.map.get_mut(&key) {
                if entry.header == header {
                    entry.used = clock;
                    return Lookup::Hit(Arc::clone(&entry.body));
                }
            }
        }
        Lookup::Miss(Ticket { key, header })
    }

    /// Keeps `body` for the ticket's key. `connected`: whether the pool holds an open
    /// connection to `path` (the condition for mapping its header, made here on first use).
    pub(super) fn keep(&self, ticket: Ticket, body: &[u8], path: &Path, connected: bool) {
        if self.budget == 0 {
            return;
        }
        let Some(header) = ticket.header else {
            if connected && self.probe.get().is_none() {
                if let Some(probe) = WalProbe::open(path) {
                    // A racing thread may have set one first: either maps the same file.
                    let _ = self.probe.set(probe);
                }
            }
            return;
        };
        let cost = ticket.key.len() + body.len() + ENTRY_OVERHEAD;
        // One answer may not push out most of the others.
        if cost > self.budget / 4 {
            return;
        }
        let mut entries = super::lock(&self.entries);
        if let Some(old) = entries.map.remove(&ticket.key) {
            entries.bytes -= ticket.key.len() + old.body.len() + ENTRY_OVERHEAD;
        }
        while entries.bytes + cost > self.budget {
            let Some(oldest) = entries
                .map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(old) = entries.map.remove(&oldest) {
                entries.bytes -= oldest.len() + old.body.len() + ENTRY_OVERHEAD;
            }
        }
        entries.clock += 1;
        let used = entries.clock;
        entries.bytes += cost;
        entries.map.insert(
            ticket.key,
            Entry {
                header,
                body: Arc::from(body),
                used,
            },
        );
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> (usize, usize) {
        let entries = super::lock(&self.entries);
        (entries.map.len(), entries.bytes)
    }
}
