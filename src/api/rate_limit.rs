//! Per-tenant and per-member rate limits on tenant routes: token buckets in memory, one per
//! tenant and one per (tenant, member), refilled continuously from the time passed in (`now_ms`,
//! so tests move time instead of sleeping), and the `RateLimit-Policy` / `RateLimit` header
//! fields of draft-ietf-httpapi-ratelimit-headers-11. The rates are the tenant's plan's
//! (`api_requests_per_minute`, `api_requests_per_member_per_minute`), each falling back to the
//! server's flag when the plan names none; the pipeline hands them in, read with the member
//! (`api::memo`), so choosing them costs a request nothing.
//!
//! A full bucket is the same as none, so the buckets of tenants and members quiet long enough to
//! refill are dropped when a shard reaches its share of the cap; past that, the least recently
//! used goes. The hot path is one mutex of 16 (by the tenant's id), two map lookups by borrowed
//! key and a little arithmetic; a new tenant or member costs one allocation.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};

use crate::auth::clock::Clock;
use crate::catalog::PlanRates;
use crate::error::Error;
use crate::http::Response;

/// Requests per minute; 0 turns that limit off. The burst is one minute's worth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rates {
    pub tenant_per_min: u32,
    pub member_per_min: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// What a tenant gets where its plan names no rate (see [`Limiter::rates_for`]).
    pub rates: Rates,
    /// Buckets kept at most, tenants' and members' together.
    pub max_buckets: usize,
    /// Tests only: time stands still from the limiter's creation and moves only by the
    /// sessions clock's `advance`, so no bucket refills while a slow machine works through a
    /// test's requests.
    pub frozen_clock: bool,
}

impl Default for RateLimitConfig {
    /// High enough that nothing served today is limited.
    fn default() -> Self {
        RateLimitConfig {
            rates: Rates {
                tenant_per_min: 6000,
                member_per_min: 1200,
            },
            max_buckets: 100_000,
            frozen_clock: false,
        }
    }
}

const SHARDS: usize = 16;
const MS_PER_MIN: f64 = 60_000.0;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
    /// The rate it was last used at: tenants' rates differ (their plans), so a sweep for room
    /// judges each bucket by its own.
    per_min: u32,
}

impl Bucket {
    fn full(per_min: u32, now_ms: i64) -> Bucket {
        Bucket {
            tokens: f64::from(per_min),
            at_ms: now_ms,
            per_min,
        }
    }

    /// A new full bucket, counted in its shard.
    fn new(count: &mut usize, now_ms: i64, per_min: u32) -> Bucket {
        *count += 1;
        Bucket::full(per_min, now_ms)
    }

    /// Refills a bucket in force and says how long until it has a token (0: it has one now).
    fn look(b: Option<&mut Bucket>, per_min: u32, now_ms: i64) -> (Option<&mut Bucket>, u64) {
        let Some(b) = b else { return (None, 0) };
        b.refill(per_min, now_ms);
        let wait = if b.tokens < 1.0 {
            b.wait_secs(per_min).max(1)
        } else {
            0
        };
        (Some(b), wait)
    }

    /// At the rate in force now: a plan's rate lowered takes the tokens above the new burst
    /// away at once, one raised refills faster from here on.
    fn refill(&mut self, per_min: u32, now_ms: i64) {
        self.per_min = per_min;
        let elapsed = (now_ms - self.at_ms).max(0) as f64;
        let cap = f64::from(per_min);
        self.tokens = (self.tokens + elapsed * cap / MS_PER_MIN).min(cap);
        // A clock set back does not hand out tokens twice.
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// Whether it has refilled by `now_ms`, at its own last rate.
    fn is_full(&self, now_ms: i64) -> bool {
        let mut b = *self;
        b.refill(self.per_min, now_ms);
        b.tokens >= f64::from(self.per_min)
    }

    /// Whole seconds, rounded up, until one token is there.
    fn wait_secs(&self, per_min: u32) -> u64 {
        let missing = (1.0 - self.tokens).max(0.0);
        (missing * 60.0 / f64::from(per_min)).ceil() as u64
    }
}

/// A tenant's bucket and its members'.
#[derive(Default)]
struct TenantBuckets {
    tenant: Option<Bucket>,
    members: HashMap<i64, Bucket>,
}

#[derive(Default)]
struct Shard {
    tenants: HashMap<String, TenantBuckets>,
    /// Buckets in this shard, tenants' and members'.
    count: usize,
}

/// What one request found: admitted or not, and the state for the headers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    pub rates: Rates,
    /// Whole tokens left after this request (`None`: that limit is off).
    pub tenant_left: Option<u64>,
    pub member_left: Option<u64>,
    /// Seconds until each refused bucket has a token again; 0 when it has one now.
    pub tenant_wait: u64,
    pub member_wait: u64,
    pub admitted: bool,
}

impl Verdict {
    pub fn retry_after(&self) -> u64 {
        self.tenant_wait.max(self.member_wait).max(1)
    }
}

pub struct Limiter {
    config: RateLimitConfig,
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
    /// Set with `frozen_clock`: the time the limiter was made.
    frozen_at_ms: Option<i64>,
}

impl Limiter {
    pub fn new(config: RateLimitConfig) -> Limiter {
        Limiter {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            frozen_at_ms: config.frozen_clock.then(|| Clock::default().now_millis()),
            config,
        }
    }

    /// The time buckets are judged by, from the sessions clock (see `frozen_clock`).
    pub fn now_ms(&self, clock: &Clock) -> i64 {
        match self.frozen_at_ms {
            Some(at) => at + clock.ahead_millis(),
            None => clock.now_millis(),
        }
    }

    /// The rates a tenant gets, the one place that decides it: each its plan's, or the
    /// server's configured one where the plan names none.
    pub fn rates_for(&self, plan: PlanRates) -> Rates {
        Rates {
            tenant_per_min: plan
                .tenant_per_min
                .unwrap_or(self.config.rates.tenant_per_min),
            member_per_min: plan
                .member_per_min
                .unwrap_or(self.config.rates.member_per_min),
        }
    }

    /// Counts one request of `user_id` in `tenant_id` at `now_ms` (Unix milliseconds): it is
    /// admitted, and takes a token from each bucket, only if both have one.
    pub fn check(&self, rates: Rates, tenant_id: &str, user_id: i64, now_ms: i64) -> Verdict {
        let mut verdict = Verdict {
            rates,
            tenant_left: None,
            member_left: None,
            tenant_wait: 0,
            member_wait: 0,
            admitted: true,
        };
        if rates.tenant_per_min == 0 && rates.member_per_min == 0 {
            return verdict;
        }
        let index = (self.hasher.hash_one(tenant_id) as usize) % SHARDS;
        let mut shard = self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let per_shard = (self.config.max_buckets / SHARDS).max(2);
        // Only a request that makes a bucket can go past the cap; room is made down to 7/8 of
        // it, so that a full shard is swept once per many new buckets, not on every request.
        let known = shard.tenants.get(tenant_id).is_some_and(|t| {
            (rates.tenant_per_min == 0 || t.tenant.is_some())
                && (rates.member_per_min == 0 || t.members.contains_key(&user_id))
        });
        if !known && shard.count + 2 > per_shard {
            shard.make_room(now_ms, (per_shard - per_shard / 8).max(2));
        }
        let shard = &mut *shard;
        let entry = match shard.tenants.get_mut(tenant_id) {
            Some(entry) => entry,
            None => shard.tenants.entry(tenant_id.to_string()).or_default(),
        };
        let count = &mut shard.count;
        let (mut tenant, tenant_wait) = Bucket::look(
            (rates.tenant_per_min > 0).then(|| {
                entry
                    .tenant
                    .get_or_insert_with(|| Bucket::new(count, now_ms, rates.tenant_per_min))
            }),
            rates.tenant_per_min,
            now_ms,
        );
        let (mut member, member_wait) = Bucket::look(
            (rates.member_per_min > 0).then(|| {
                entry
                    .members
                    .entry(user_id)
                    .or_insert_with(|| Bucket::new(count, now_ms, rates.member_per_min))
            }),
            rates.member_per_min,
            now_ms,
        );
        verdict.tenant_wait = tenant_wait;
        verdict.member_wait = member_wait;
        verdict.admitted = tenant_wait == 0 && member_wait == 0;
        // A refused request takes nothing, so a member held back does not drain the tenant.
        if verdict.admitted {
            for b in tenant.iter_mut().chain(member.iter_mut()) {
                b.tokens -= 1.0;
            }
        }
        verdict.tenant_left = tenant.map(|b| b.tokens.max(0.0) as u64);
        verdict.member_left = member.map(|b| b.tokens.max(0.0) as u64);
        verdict
    }

    /// Buckets kept now, for tests of the cap.
    pub fn kept(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).count)
            .sum()
    }
}

impl Shard {
    /// Drops the full buckets (the same as none); if that frees too little, the least recently
    /// used tenants with their members, until two more fit under `target`.
    fn make_room(&mut self, now_ms: i64, target: usize) {
        let mut count = 0;
        self.tenants.retain(|_, t| {
            t.members.retain(|_, b| !b.is_full(now_ms));
            if t.tenant.is_some_and(|b| b.is_full(now_ms)) {
                t.tenant = None;
            }
            count += t.members.len() + usize::from(t.tenant.is_some());
            t.tenant.is_some() || !t.members.is_empty()
        });
        self.count = count;
        while self.count + 2 > target {
            let oldest = self
                .tenants
                .iter()
                .min_by_key(|(_, t)| {
                    t.members
                        .values()
                        .chain(t.tenant.iter())
                        .map(|b| b.at_ms)
                        .max()
                })
                .map(|(id, _)| id.clone());
            let Some(id) = oldest else { break };
            if let Some(t) = self.tenants.remove(&id) {
                self.count -= t.members.len() + usize::from(t.tenant.is_some());
            }
        }
    }
}

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-11): one policy per limit
/// in force, its quota `q` per window `w` seconds. The burst is one minute's worth, so the window
/// is 60 s.
///
/// Written into one buffer, as `state_header` is: with `format!` and a join it was a third of
/// what the limiter cost a request (about 140 ns of 350, measured in a release build).
pub fn policy_header(rates: Rates) -> String {
    let mut out = String::with_capacity(64);
    for (name, per_min) in [
        ("tenant", rates.tenant_per_min),
        ("member", rates.member_per_min),
    ] {
        if per_min == 0 {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push('"');
        out.push_str(name);
        out.push_str("\";q=");
        out.push_str(itoa::Buffer::new().format(per_min));
        out.push_str(";w=60");
    }
    out
}

/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers-11): per policy, the requests
/// left `r` and `t`, the seconds until the next one is admitted (0 while `r` is above 0: a token
/// bucket has no fixed window to reset).
pub fn state_header(v: &Verdict) -> String {
    let mut out = String::with_capacity(64);
    for (name, left, wait) in [
        ("tenant", v.tenant_left, v.tenant_wait),
        ("member", v.member_left, v.member_wait),
    ] {
        let Some(left) = left else { continue };
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push('"');
        out.push_str(name);
        out.push_str("\";r=");
        out.push_str(itoa::Buffer::new().format(left));
        out.push_str(";t=");
        out.push_str(itoa::Buffer::new().format(wait));
    }
    out
}

/// Adds both header fields to a tenant route's answer (none when both limits are off).
pub fn with_headers(response: Response, v: &Verdict) -> Response {
    if v.tenant_left.is_none() && v.member_left.is_none() {
        return response;
    }
    response
        .with_header("RateLimit-Policy", policy_header(v.rates))
        .with_header("RateLimit", state_header(v))
}

/// The `429` for a refused request, with its headers.
pub fn refused(v: &Verdict) -> Response {
    let response = Error::RateLimited {
        retry_after_secs: v.retry_after(),
    }
    .into_response();
    with_headers(response, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: Rates = Rates {
        tenant_per_min: 10,
        member_per_min: 4,
    };

    fn limiter() -> Limiter {
        Limiter::new(RateLimitConfig {
            rates: RATES,
            max_buckets: 1000,
            frozen_clock: false,
        })
    }

    #[test]
    fn a_member_gets_a_minutes_worth_then_waits_for_the_clock_to_refill() {
        let l = limiter();
        let now = 1_000_000;
        for i in 0..4 {
            let v = l.check(RATES, "t1", 7, now);
            assert!(v.admitted, "request {i}");
            assert_eq!(v.member_left, Some(3 - i));
        }
        let refused = l.check(RATES, "t1", 7, now);
        assert!(!refused.admitted);
        // One token every 15 s at 4 a minute.
        assert_eq!(refused.retry_after(), 15);
        assert_eq!(refused.member_wait, 15);
        // The refused request took nothing from the tenant.
        assert_eq!(refused.tenant_left, Some(6));
        assert!(!l.check(RATES, "t1", 7, now + 14_999).admitted);
        assert!(l.check(RATES, "t1", 7, now + 15_000).admitted);
        assert!(!l.check(RATES, "t1", 7, now + 15_000).admitted);
        // A whole minute refills the whole burst, and no more.
        for _ in 0..4 {
            assert!(l.check(RATES, "t1", 7, now + 600_000).admitted);
        }
        assert!(!l.check(RATES, "t1", 7, now + 600_000).admitted);
    }

    #[test]
    fn the_tenant_limit_holds_across_members_and_not_across_tenants() {
        let l = limiter();
        let now = 5_000;
        for user in 0..10 {
            assert!(l.check(RATES, "t1", user, now).admitted, "user {user}");
        }
        let v = l.check(RATES, "t1", 99, now);
        assert!(!v.admitted);
        assert_eq!(v.tenant_wait, 6);
        assert_eq!(v.member_left, Some(4), "the member's bucket is untouched");
        assert!(l.check(RATES, "t2", 99, now).admitted);
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let l = limiter();
        let only_tenant = Rates {
            tenant_per_min: 2,
            member_per_min: 0,
        };
        assert!(l.check(only_tenant, "t", 1, 0).admitted);
        let v = l.check(only_tenant, "t", 1, 0);
        assert_eq!((v.member_left, v.tenant_left), (None, Some(0)));
        assert_eq!(policy_header(only_tenant), "\"tenant\";q=2;w=60");
        let only_member = Rates {
            tenant_per_min: 0,
            member_per_min: 7,
        };
        assert_eq!(policy_header(only_member), "\"member\";q=7;w=60");
        let off = Rates {
            tenant_per_min: 0,
            member_per_min: 0,
        };
        for _ in 0..100 {
            assert!(l.check(off, "t", 1, 0).admitted);
        }
    }

    #[test]
    fn memory_stays_under_the_cap_and_the_least_recently_used_go() {
        let l = Limiter::new(RateLimitConfig {
            rates: RATES,
            max_buckets: 64,
            frozen_clock: false,
        });
        for user in 0..10_000 {
            l.check(RATES, &format!("t{}", user % 300), user, user);
            assert!(l.kept() <= 64, "{} kept", l.kept());
        }
        // A busy member is kept while many quiet ones come and go: the least recently used go.
        let l = Limiter::new(RateLimitConfig {
            rates: RATES,
            max_buckets: 64,
            frozen_clock: false,
        });
        for _ in 0..4 {
            assert!(l.check(RATES, "busy", 1, 60_000).admitted);
        }
        for user in 2..1000 {
            l.check(RATES, &format!("quiet{user}"), user, 30_000 + user);
        }
        assert!(!l.check(RATES, "busy", 1, 60_000).admitted);
        assert!(l.kept() <= 64);
    }

    #[test]
    fn full_buckets_are_dropped_as_none_before_any_in_use() {
        let mut shard = Shard::default();
        let mut t = TenantBuckets::default();
        // Used at 0: full again by 60 s. Used at 50 s: not yet.
        t.members.insert(
            1,
            Bucket {
                tokens: 3.0,
                at_ms: 0,
                per_min: RATES.member_per_min,
            },
        );
        t.members.insert(
            2,
            Bucket {
                tokens: 0.0,
                at_ms: 50_000,
                per_min: RATES.member_per_min,
            },
        );
        t.tenant = Some(Bucket {
            tokens: 5.0,
            at_ms: 50_000,
            per_min: RATES.tenant_per_min,
        });
        shard.tenants.insert("a".into(), t);
        let quiet = TenantBuckets {
            tenant: Some(Bucket {
                tokens: 9.0,
                at_ms: 0,
                per_min: RATES.tenant_per_min,
            }),
            members: HashMap::new(),
        };
        shard.tenants.insert("b".into(), quiet);
        shard.count = 4;
        shard.make_room(60_000, 5);
        assert_eq!(shard.count, 2);
        assert!(!shard.tenants.contains_key("b"));
        let a = &shard.tenants["a"];
        assert!(a.tenant.is_some());
        assert_eq!(a.members.keys().collect::<Vec<_>>(), [&2]);
    }

    #[test]
    fn headers_have_the_drafts_shape() {
        let l = limiter();
        let v = l.check(RATES, "t", 1, 0);
        assert_eq!(
            policy_header(RATES),
            "\"tenant\";q=10;w=60, \"member\";q=4;w=60"
        );
        assert_eq!(state_header(&v), "\"tenant\";r=9;t=0, \"member\";r=3;t=0");
    }

    #[test]
    fn a_plan_names_its_rates_and_the_server_flags_fill_in_the_rest() {
        let l = limiter();
        assert_eq!(l.rates_for(PlanRates::default()), RATES);
        let plan = PlanRates {
            tenant_per_min: Some(500),
            member_per_min: None,
        };
        assert_eq!(
            l.rates_for(plan),
            Rates {
                tenant_per_min: 500,
                member_per_min: RATES.member_per_min,
            }
        );
    }

    #[test]
    fn a_sweep_judges_each_bucket_by_its_own_rate() {
        // A tenant at 6000 a minute with 100 tokens left is not full, whatever the rate of the
        // request that made the sweep: dropping it would hand it a new minute's worth.
        let mut shard = Shard::default();
        let one = |tokens, at_ms, per_min| TenantBuckets {
            tenant: Some(Bucket {
                tokens,
                at_ms,
                per_min,
            }),
            members: HashMap::new(),
        };
        shard.tenants.insert("big".into(), one(100.0, 59_000, 6000));
        shard.tenants.insert("small".into(), one(0.0, 0, 1));
        shard.count = 2;
        shard.make_room(60_000, 10);
        assert_eq!(shard.count, 1);
        assert!(shard.tenants.contains_key("big"));
        assert!(
            !shard.tenants.contains_key("small"),
            "full again after a minute"
        );
    }

    #[test]
    fn a_lower_rate_takes_effect_on_the_next_request() {
        let l = limiter();
        assert!(l.check(RATES, "t", 1, 0).admitted);
        let lower = Rates {
            tenant_per_min: 2,
            member_per_min: 0,
        };
        // 9 tokens left at 10 a minute; the new burst is 2.
        for _ in 0..2 {
            assert!(l.check(lower, "t", 1, 0).admitted);
        }
        let v = l.check(lower, "t", 1, 0);
        assert!(!v.admitted, "the burst is the new rate's: {v:?}");
        assert_eq!(v.retry_after(), 30);
    }
}
