//! The application's configuration: `AppConfig` and the session, real-time and webhook
//! settings in it.

use std::path::PathBuf;

use crate::auth::hasher::HasherConfig;
use crate::auth::throttle::ThrottleConfig;
use crate::tenancy::identify::IdentifyConfig;
use crate::tenancy::RegistryConfig;

/// Session lifetimes and cookie flags.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// A session unused this long ends.
    pub idle_secs: i64,
    /// A session ends this long after login, used or not.
    pub lifetime_secs: i64,
    /// Mark the cookie `Secure` (the server is reached over HTTPS).
    pub secure_cookie: bool,
    /// What sessions' expiry and idle time are judged by.
    pub clock: crate::auth::clock::Clock,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_secs: 12 * 3600,
            lifetime_secs: 7 * 24 * 3600,
            secure_cookie: false,
            clock: Default::default(),
        }
    }
}

/// The real-time channels' settings that are not credentials.
#[derive(Clone, Debug)]
pub struct RealtimeConfig {
    /// Browser origins allowed besides the server's own hosts (exact, e.g.
    /// `https://app.example.com`).
    pub allowed_origins: Vec<String>,
    pub activity_timeout: std::time::Duration,
    pub pong_timeout: std::time::Duration,
    /// A WebSocket with no subscription this long is closed (4202).
    pub subscribe_timeout: std::time::Duration,
    /// WebSockets open at most, and per client address.
    pub max_websockets: usize,
    pub max_websockets_per_client: usize,
    /// `--redis-url`: the other nodes' events and revocations come and go through it.
    pub redis_url: Option<crate::realtime::RedisUrl>,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            allowed_origins: Vec::new(),
            activity_timeout: std::time::Duration::from_secs(120),
            pong_timeout: std::time::Duration::from_secs(30),
            subscribe_timeout: std::time::Duration::from_secs(30),
            max_websockets: 512,
            max_websockets_per_client: 64,
            redis_url: None,
        }
    }
}

/// Configuration of the application behind the HTTP layer.
#[derive(Clone, Debug, Default)]
pub struct AppConfig {
    pub data_dir: PathBuf,
    pub identify: IdentifyConfig,
    pub registry: RegistryConfig,
    pub sessions: SessionConfig,
    pub hasher: HasherConfig,
    pub throttle: ThrottleConfig,
    pub realtime: RealtimeConfig,
    pub webhooks: WebhooksConfig,
    pub jobs: JobsConfig,
    pub metrics: super::metrics::MetricsConfig,
    pub exports: super::export::ExportConfig,
    pub rate_limit: super::rate_limit::RateLimitConfig,
    /// Where new tenants' databases go (`--store`); the sqld server is `registry.sqld`.
    pub new_tenants: crate::catalog::TenantStore,
}

/// Outbound webhooks: where deliveries may go, when a failing endpoint is disabled, how long a
/// rotated secret keeps signing.
#[derive(Clone, Debug)]
pub struct WebhooksConfig {
    /// Deliver to private, loopback and link-local addresses too (on-premises setups).
    pub allow_private: bool,
    /// An endpoint is disabled after this many failed attempts in a row...
    pub max_failures: u32,
    /// ...or once it has failed without a success in between for this long.
    pub max_failing: std::time::Duration,
    /// The secret before a rotation signs beside the new one for this long.
    pub rotation_grace: std::time::Duration,
    pub connect_timeout: std::time::Duration,
    /// For the answer's head, and then for each read of its body.
    pub answer_timeout: std::time::Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            allow_private: false,
            max_failures: 20,
            max_failing: std::time::Duration::from_secs(24 * 3600),
            rotation_grace: std::time::Duration::from_secs(24 * 3600),
            connect_timeout: std::time::Duration::from_secs(5),
            answer_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// The background jobs' workers and their clock (see `api::jobs`).
#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// Worker threads per queue; a queue not named gets its default (`job_kinds::QUEUES`).
    pub workers: Vec<(String, usize)>,
    /// How often the workers look for jobs enqueued by other processes, and the clock thread
    /// reclaims expired leases and fires due schedules.
    pub poll: std::time::Duration,
    /// Done and discarded jobs are removed this long after they finished.
    pub retention: std::time::Duration,
    /// The delay before the second attempt; it doubles for each later one (with jitter).
    pub backoff: std::time::Duration,
    /// A server that holds the data directory's lock takes back, on starting, every job a
    /// server was running: that server is gone.
    pub reclaim_on_start: bool,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            workers: Vec::new(),
            poll: std::time::Duration::from_secs(1),
            retention: std::time::Duration::from_secs(7 * 24 * 3600),
            backoff: std::time::Duration::from_secs(2),
            reclaim_on_start: false,
        }
    }
}
