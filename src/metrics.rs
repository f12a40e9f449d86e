//! The server's metrics, kept in memory for `/metrics` (Prometheus text format): the counters and
//! histograms other modules raise with a line each, the per-tenant request counts of which only
//! the first K tenants to be asked for since the start are named (the rest summed under
//! `tenant="_other"`), and each
//! tenant's last few server errors, for its health. Imports nothing of the crate, so that every
//! layer may use it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use serde::Serialize;

/// The label value that sums every tenant outside the named K.
pub const OTHER_TENANTS: &str = "_other";
pub const DEFAULT_TOP_TENANTS: usize = 20;
/// Recent errors kept per tenant, and tenants kept: bounded whatever the number of tenants.
pub const RECENT_ERRORS_PER_TENANT: usize = 10;
pub const RECENT_ERRORS_TENANTS: usize = 1_000;

/// Status classes, `1xx` to `5xx`: the per-tenant series' second label.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One server fault of a tenant: a 5xx answer or a failed job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecentError {
    /// Unix seconds.
    pub at: i64,
    /// `request` or `job`.
    pub source: &'static str,
    pub message: String,
}

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    read_cache: IntCounterVec,
    write_turn_wait: Histogram,
    checkpoints: IntCounterVec,
    checkpoint_wal: Histogram,
    job_attempts: IntCounterVec,
    webhook_deliveries: IntCounterVec,
    login_failures: IntCounterVec,
    login_throttled: IntCounterVec,
    top_tenants: AtomicUsize,
    /// Tenants named so far (at most `top_tenants`); guarded by `tenants`' write lock.
    named: AtomicUsize,
    /// By tenant id. Read-locked on the hot path (counts are atomics); written on a tenant's
    /// first request or a new slug.
    tenants: RwLock<HashMap<String, Arc<TenantCounts>>>,
    recent: Mutex<HashMap<String, VecDeque<RecentError>>>,
}

struct TenantCounts {
    slug: String,
    /// Named in its own series, decided on its first request and kept until restart: a
    /// tenant moving from `_other` into the named ones (or back) would make `_other` go down,
    /// which Prometheus reads as a counter reset.
    named: bool,
    by_class: [AtomicU64; 5],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("unique name");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    registry.register(Box::new(h.clone())).expect("unique name");
    h
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        // Process metrics (memory, CPU, descriptors, threads, start time) from /proc, read at
        // each scrape.
        #[cfg(target_os = "linux")]
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "tenantd_http_request_duration_seconds",
                "Time from a request's whole arrival to its answer, by route pattern.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(http_duration.clone()))
            .expect("unique name");
        Metrics {
            http_requests: counter(
                &registry,
                "tenantd_http_requests_total",
                "Requests answered, by method, route pattern and status code.",
                &["method", "route", "status"],
            ),
            http_duration,
            read_cache: counter(
                &registry,
                "tenantd_read_cache_lookups_total",
                "Lookups in the tenants' answers caches, by result (hit, miss).",
                &["result"],
            ),
            write_turn_wait: histogram(
                &registry,
                "tenantd_write_turn_wait_seconds",
                "How long tenant writers waited for their write turn.",
                vec![0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0],
            ),
            checkpoints: counter(
                &registry,
                "tenantd_checkpoints_total",
                "Checkpoints of tenant files by the checkpoint thread, by result (ok, failed).",
                &["result"],
            ),
            checkpoint_wal: histogram(
                &registry,
                "tenantd_checkpoint_wal_bytes",
                "The size of a tenant file's -wal when a checkpoint of it began.",
                prometheus::exponential_buckets(64.0 * 1024.0, 4.0, 8).expect("valid buckets"),
            ),
            job_attempts: counter(
                &registry,
                "tenantd_job_attempts_total",
                "Job attempts by queue and outcome (done, failed, waiting).",
                &["queue", "outcome"],
            ),
            webhook_deliveries: counter(
                &registry,
                "tenantd_webhook_deliveries_total",
                "Outbound webhook delivery attempts by outcome (delivered, failed).",
                &["outcome"],
            ),
            login_failures: counter(
                &registry,
                "tenantd_login_failures_total",
                "Wrong passwords or codes at login, by realm (user, admin).",
                &["realm"],
            ),
            login_throttled: counter(
                &registry,
                "tenantd_login_throttled_total",
                "Login attempts refused by the throttle (429), by realm.",
                &["realm"],
            ),
            registry,
            top_tenants: AtomicUsize::new(DEFAULT_TOP_TENANTS),
            named: AtomicUsize::new(0),
            tenants: RwLock::new(HashMap::new()),
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// How many tenants the per-tenant series name; the rest are summed under `_other`.
    pub fn set_top_tenants(&self, k: usize) {
        self.top_tenants.store(k, Ordering::Relaxed);
    }

    /// One answered request. `route` is the router's pattern (or a fixed name), never a raw
    /// path; `tenant` is (id, slug) when the request named one.
    pub fn request(
        &self,
        method: &str,
        route: &str,
        status: u16,
        took: Duration,
        tenant: Option<(&str, &str)>,
    ) {
        // Only methods we route: any other token a client sends would be a new series.
        let method = match method {
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method,
            _ => "other",
        };
        let mut code = itoa::Buffer::new();
        self.http_requests
            .with_label_values(&[method, route, code.format(status)])
            .inc();
        self.http_duration
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
        if let Some((id, slug)) = tenant {
            let class = usize::from(status / 100).clamp(1, 5) - 1;
            // Counted under the read lock: no reference count moves on the way.
            if let Some(counts) = read(&self.tenants).get(id).filter(|c| c.slug == slug) {
                counts.by_class[class].fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.tenant_counts(id, slug).by_class[class].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The tenant's counts, made on its first request or renewed under a new slug.
    fn tenant_counts(&self, id: &str, slug: &str) -> Arc<TenantCounts> {
        let mut tenants = write(&self.tenants);
        let entry = tenants.entry(id.to_string()).or_insert_with(|| {
            // Under the write lock: no two first requests take the last place.
            let named =
                self.named.load(Ordering::Relaxed) < self.top_tenants.load(Ordering::Relaxed);
            if named {
                self.named.fetch_add(1, Ordering::Relaxed);
            }
            Arc::new(TenantCounts {
                slug: slug.to_string(),
                named,
                by_class: Default::default(),
            })
        });
        if entry.slug != slug {
            // Renamed: the counts go on under the new name.
            let by_class =
                std::array::from_fn(|i| AtomicU64::new(entry.by_class[i].load(Ordering::Relaxed)));
            *entry = Arc::new(TenantCounts {
                slug: slug.to_string(),
                named: entry.named,
                by_class,
            });
        }
        Arc::clone(entry)
    }

    pub fn read_cache(&self, hit: bool) {
        self.read_cache
            .with_label_values(&[if hit { "hit" } else { "miss" }])
            .inc();
    }

    pub fn write_turn_waited(&self, waited: Duration) {
        self.write_turn_wait.observe(waited.as_secs_f64());
    }

    /// A checkpoint ended; `wal_bytes`: the log's size when it began.
    pub fn checkpoint(&self, ok: bool, wal_bytes: u64) {
        self.checkpoints
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
        self.checkpoint_wal.observe(wal_bytes as f64);
    }

    pub fn job_attempt(&self, queue: &str, outcome: &'static str) {
        self.job_attempts.with_label_values(&[queue, outcome]).inc();
    }

    pub fn webhook_delivery(&self, delivered: bool) {
        self.webhook_deliveries
            .with_label_values(&[if delivered { "delivered" } else { "failed" }])
            .inc();
    }

    pub fn login_failed(&self, realm: &str) {
        self.login_failures.with_label_values(&[realm]).inc();
    }

    pub fn login_throttled(&self, realm: &str) {
        self.login_throttled.with_label_values(&[realm]).inc();
    }

    /// Keeps a server fault of the tenant `tenant_id`: its last [`RECENT_ERRORS_PER_TENANT`],
    /// for [`RECENT_ERRORS_TENANTS`] tenants at most (the one whose latest fault is oldest
    /// makes room).
    pub fn recent_error(&self, tenant_id: &str, source: &'static str, message: String) {
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut recent = lock(&self.recent);
        if !recent.contains_key(tenant_id) && recent.len() >= RECENT_ERRORS_TENANTS {
            let stalest = recent
                .iter()
                .min_by_key(|(_, errors)| errors.back().map_or(i64::MIN, |e| e.at))
                .map(|(id, _)| id.clone());
            if let Some(id) = stalest {
                recent.remove(&id);
            }
        }
        let errors = recent.entry(tenant_id.to_string()).or_default();
        if errors.len() >= RECENT_ERRORS_PER_TENANT {
            errors.pop_front();
        }
        errors.push_back(RecentError {
            at,
            source,
            message,
        });
    }

    /// The tenant's recent faults, newest first.
    pub fn recent_errors(&self, tenant_id: &str) -> Vec<RecentError> {
        lock(&self.recent)
            .get(tenant_id)
            .map(|errors| errors.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// The text exposition of everything kept here and of `scraped` (the values read at
    /// scrape time by the caller: pools, jobs, WebSockets).
    pub fn render(&self, scraped: &Registry) -> String {
        let mut families = self.registry.gather();
        families.extend(scraped.gather());
        families.extend(self.tenant_series().collect());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// `tenantd_tenant_requests_total{tenant, class}` for the K tenants named (the first K to
    /// be asked for since the start), and the rest summed under `_other`: at most (K + 1) x 5
    /// series, whatever the number of tenants. A tenant never moves between a named series and
    /// `_other`, so every series only grows.
    fn tenant_series(&self) -> IntCounterVec {
        let series = IntCounterVec::new(
            Opts::new(
                "tenantd_tenant_requests_total",
                "Requests per tenant by status class: the first tenants asked for by slug, the \
                 rest summed under tenant=\"_other\".",
            ),
            &["tenant", "class"],
        )
        .expect("valid metric");
        let all: Vec<Arc<TenantCounts>> = read(&self.tenants).values().cloned().collect();
        let mut other = [0u64; 5];
        for counts in &all {
            for (class, count) in counts.by_class.iter().enumerate() {
                let n = count.load(Ordering::Relaxed);
                if counts.named {
                    if n > 0 {
                        series
                            .with_label_values(&[&counts.slug, CLASSES[class]])
                            .inc_by(n);
                    }
                } else {
                    other[class] += n;
                }
            }
        }
        for (class, n) in other.iter().enumerate() {
            if *n > 0 {
                series
                    .with_label_values(&[OTHER_TENANTS, CLASSES[class]])
                    .inc_by(*n);
            }
        }
        series
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_tenants_are_named_and_the_rest_summed() {
        let m = Metrics::new();
        m.set_top_tenants(2);
        for (i, slug) in ["a", "b", "c", "d"].iter().enumerate() {
            for _ in 0..=i {
                m.request("GET", "/x", 200, Duration::ZERO, Some((slug, slug)));
            }
        }
        m.request("GET", "/x", 500, Duration::ZERO, Some(("d", "d")));
        let text = m.render(&Registry::new());
        assert!(text.contains("tenantd_tenant_requests_total{class=\"2xx\",tenant=\"a\"} 1"));
        assert!(text.contains("tenantd_tenant_requests_total{class=\"2xx\",tenant=\"b\"} 2"));
        assert!(!text.contains("tenant=\"d\""), "{text}");
        assert!(
            text.contains("class=\"2xx\",tenant=\"_other\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("class=\"5xx\",tenant=\"_other\"} 1"),
            "{text}"
        );
    }

    /// Every `tenantd_tenant_requests_total` series, by its labels, in one scrape.
    fn tenant_values(text: &str) -> HashMap<String, u64> {
        text.lines()
            .filter_map(|l| l.strip_prefix("tenantd_tenant_requests_total{"))
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(labels, n)| (labels.to_string(), n.parse().unwrap()))
            .collect()
    }

    /// Traffic moves from tenant to tenant (a quiet one, whose requests failed, becomes the
    /// busiest; a renamed one goes on), and no series ever shows less than it did in an
    /// earlier scrape: Prometheus would take it for a reset.
    #[test]
    fn tenant_series_never_go_down_while_traffic_shifts() {
        let m = Metrics::new();
        m.set_top_tenants(2);
        let mut seen: HashMap<String, u64> = HashMap::new();
        // (id, slug, answers 2xx, answers 5xx)
        let phases: [&[(&str, &str, u64, u64)]; 4] = [
            &[
                ("a", "a", 10, 0),
                ("b", "b", 10, 0),
                ("c", "c", 0, 8),
                ("e", "e", 0, 1),
            ],
            &[("c", "c", 5, 0)],
            &[("d", "d", 50, 3), ("e", "e", 70, 5)],
            &[("b", "bee", 40, 2), ("a", "a", 1, 1)],
        ];
        for phase in phases {
            for (id, slug, ok, failed) in phase {
                for (status, n) in [(200, ok), (500, failed)] {
                    for _ in 0..*n {
                        m.request("GET", "/x", status, Duration::ZERO, Some((id, slug)));
                    }
                }
            }
            let now = tenant_values(&m.render(&Registry::new()));
            assert!(now.len() <= 3 * 5, "{now:?}");
            for (series, n) in now {
                let before = seen.insert(series.clone(), n).unwrap_or(0);
                assert!(n >= before, "{series} went from {before} to {n}");
            }
        }
        assert!(
            seen.keys().any(|s| s.contains("tenant=\"bee\"")),
            "{seen:?}"
        );
    }

    #[test]
    fn recent_errors_are_bounded_per_tenant_and_newest_first() {
        let m = Metrics::new();
        for i in 0..(RECENT_ERRORS_PER_TENANT + 3) {
            m.recent_error("t1", "request", format!("e{i}"));
        }
        let kept = m.recent_errors("t1");
        assert_eq!(kept.len(), RECENT_ERRORS_PER_TENANT);
        assert_eq!(
            kept[0].message,
            format!("e{}", RECENT_ERRORS_PER_TENANT + 2)
        );
        assert!(m.recent_errors("t2").is_empty());
        for i in 0..(RECENT_ERRORS_TENANTS + 5) {
            m.recent_error(&format!("x{i}"), "job", "boom".into());
        }
        assert!(lock(&m.recent).len() <= RECENT_ERRORS_TENANTS);
    }
}
