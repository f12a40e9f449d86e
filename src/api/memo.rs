//! Each HTTP worker's memo of the members it has let in: for a token (by its digest) and a
//! tenant, the session, user and membership the catalog gave for them, and the tenant's plan
//! rates, kept while the catalog is unchanged.
//!
//! Why: a tenant request looks up its session, user and membership in the catalog's caches.
//! Those are shared by every worker, so each lookup takes a lock and bumps reference counts
//! on cache lines the other core touched last; on two cores that was most of what a cached
//! tenant read cost beyond `/healthz`. The memo is owned by one worker thread and handed to
//! each of its requests explicitly (`http::Handler::worker_state`), so a hit writes nothing
//! shared.
//!
//! It holds no tenant context: an entry answers "who is this token in this tenant", keyed by
//! both, and is only used by a request that presents that token for that tenant. It is
//! emptied whenever the catalog's generation moves (any commit, by this process or another),
//! which is the rule the shared caches follow too. What time alone can end (a session's expiry
//! or idle timeout) is checked by the caller on every use. Pools are not kept: the registry
//! alone decides which are open.

use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::token::TokenDigest;
use crate::catalog::{Membership, PlanRates, Session, User};

/// Entries per worker at most; past it the memo starts over. Sized for a worker's recent
/// tokens times the tenants each reaches; an entry is a few pointers.
const CAP: usize = 1024;

/// Who a token is in one tenant, as the catalog said, and the rates the tenant's plan names
/// (kept here so that a hit looks nothing else up for the rate limit).
pub struct RememberedMember {
    pub user: Arc<User>,
    pub session: Arc<Session>,
    pub membership: Arc<Membership>,
    pub rates: PlanRates,
}

/// Generic over what is kept so that its rules can be tested without a catalog.
pub struct Memo<V = RememberedMember> {
    /// The catalog generation every entry was read under.
    generation: u64,
    entries: HashMap<TokenDigest, HashMap<String, V>>,
    len: usize,
}

impl<V> Default for Memo<V> {
    fn default() -> Self {
        Memo {
            generation: 0,
            entries: HashMap::new(),
            len: 0,
        }
    }
}

impl<V> Memo<V> {
    /// The entry for this token in this tenant, if one was kept under `generation`. A memo
    /// from an older generation is emptied first.
    pub fn get(&mut self, generation: u64, digest: &TokenDigest, tenant_id: &str) -> Option<&V> {
        if self.generation != generation {
            self.entries.clear();
            self.len = 0;
            self.generation = generation;
        }
        self.entries.get(digest)?.get(tenant_id)
    }

    /// Keeps what the catalog said under `generation` (the one the request began with).
    /// Ignored if the memo has moved on to another generation since.
    pub fn keep(&mut self, generation: u64, digest: TokenDigest, tenant_id: &str, known: V) {
        if self.generation != generation {
            return;
        }
        if self.len >= CAP {
            self.entries.clear();
            self.len = 0;
        }
        let tenants = self.entries.entry(digest).or_default();
        if tenants.insert(tenant_id.to_string(), known).is_none() {
            self.len += 1;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token;

    fn known() -> &'static str {
        "who"
    }

    #[test]
    fn an_entry_serves_its_token_and_tenant_under_its_generation_only() {
        let (a, b) = (
            token::digest(&token::generate()),
            token::digest(&token::generate()),
        );
        let mut memo = Memo::<&str>::default();
        assert!(memo.get(7, &a, "t1").is_none());
        memo.keep(7, a, "t1", known());
        assert!(memo.get(7, &a, "t1").is_some());
        assert!(memo.get(7, &a, "t2").is_none(), "another tenant");
        assert!(memo.get(7, &b, "t1").is_none(), "another token");
        // Any commit to the catalog: nothing kept before counts.
        assert!(memo.get(8, &a, "t1").is_none());
        assert_eq!(memo.len(), 0);
        // Read under 8, kept after the memo moved on to 9: dropped.
        assert!(memo.get(9, &a, "t1").is_none());
        memo.keep(8, a, "t1", known());
        assert!(memo.get(9, &a, "t1").is_none());
    }

    #[test]
    fn it_starts_over_past_its_cap() {
        let digest = token::digest(&token::generate());
        let mut memo = Memo::<&str>::default();
        for i in 0..CAP {
            memo.keep(0, digest, &format!("t{i}"), known());
        }
        assert_eq!(memo.len(), CAP);
        memo.keep(0, digest, "one-more", known());
        assert_eq!(memo.len(), 1);
        assert!(memo.get(0, &digest, "one-more").is_some());
        assert!(memo.get(0, &digest, "t0").is_none());
    }
}
