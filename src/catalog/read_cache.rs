//! The identity read cache: sessions, users, memberships and tenants' plan rates kept in memory until the catalog's
//! generation moves (any commit, here or in another process).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{lock, Catalog, Membership, PlanRates, Session, User};

/// The identity reads every authenticated request makes (its session, its user, its
/// membership), kept until the catalog changes in any way. Any commit clears it, so a revoked
/// session or a changed role counts on the very next request, as if read from the table.
#[derive(Default)]
pub(crate) struct ReadCache {
    generation: u64,
    pub(crate) sessions: HashMap<String, Option<Arc<Session>>>,
    pub(crate) users: HashMap<i64, Option<Arc<User>>>,
    /// By user and the tenant id's 128 bits, so that a lookup allocates nothing.
    pub(crate) memberships: HashMap<(i64, uuid::Uuid), Option<Arc<Membership>>>,
    /// Each tenant's plan rates, by tenant id (`Catalog::cached_plan_rates`).
    pub(crate) plan_rates: HashMap<String, Option<PlanRates>>,
}

/// Entries per map before it is emptied: a bound on what unknown tokens can make us hold.
const READ_CACHE_CAP: usize = 10_000;

impl Catalog {
    /// Serves an identity read from memory, loading it on a miss, unless the catalog changed
    /// since it was cached. Commits through this catalog count at once; another process's
    /// are seen by the `PRAGMA data_version` check of `snapshot()`, which the caller ran (the
    /// plain methods run it on every call; `CatalogView` ran it once for the request).
    pub(crate) fn cached<K, Q, V, E>(
        &self,
        map: fn(&mut ReadCache) -> &mut HashMap<K, Option<V>>,
        key: &Q,
        load: impl FnOnce() -> Result<Option<V>, E>,
    ) -> Result<Option<V>, E>
    where
        K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
        Q: ToOwned<Owned = K> + std::hash::Hash + Eq + ?Sized,
        V: Clone,
    {
        let generation = self.generation.load(Ordering::SeqCst);
        {
            let mut reads = lock(&self.reads);
            if reads.generation != generation {
                *reads = ReadCache {
                    generation,
                    ..ReadCache::default()
                };
            }
            if let Some(hit) = map(&mut reads).get(key) {
                return Ok(hit.clone());
            }
        }
        let value = load()?;
        let mut reads = lock(&self.reads);
        // A commit while we read may have made the value stale: then it is not kept.
        if reads.generation == generation && self.generation.load(Ordering::SeqCst) == generation {
            let entries = map(&mut reads);
            if entries.len() >= READ_CACHE_CAP {
                entries.clear();
            }
            entries.insert(key.to_owned(), value.clone());
        }
        Ok(value)
    }

    /// After a commit through this catalog: whatever was cached may be stale.
    pub(crate) fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}
