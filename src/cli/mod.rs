//! The command line: argument parsing and one function per command. `main.rs` only calls [`run`].

mod backup;
#[cfg(test)]
mod config_tests;
mod exec;
mod export;
mod identity;
mod import;
mod jobs;
mod litestream;
mod maintenance;
mod plans;
mod tenants;

use std::fmt;
use std::path::PathBuf;

use crate::config::{self, ConfigError, ServeConfig};

/// A command-line mistake: printed with a hint to `--help`, exit status 2.
#[derive(Debug, PartialEq, Eq)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError(e.0)
    }
}

/// Options every command takes that have a value (`--json` is a flag, so it needs no entry).
const GLOBAL_VALUE_OPTIONS: [&str; 1] = ["--data"];

/// The arguments left to consume. Each command takes what it knows and [`Args::finish`] refuses
/// the rest, so a typo is an error rather than silently ignored.
pub struct Args {
    rest: Vec<String>,
}

impl Args {
    pub fn new(argv: Vec<String>) -> Args {
        Args { rest: argv }
    }

    /// `--name` present (and removed).
    pub fn flag(&mut self, name: &str) -> bool {
        let before = self.rest.len();
        self.rest.retain(|a| a != name);
        self.rest.len() != before
    }

    /// `--name VALUE` or `--name=VALUE`, the last one given.
    pub fn value(&mut self, name: &str) -> Result<Option<String>, CliError> {
        Ok(self.values(name)?.pop())
    }

    /// Every `--name VALUE` or `--name=VALUE`, in order.
    pub fn values(&mut self, name: &str) -> Result<Vec<String>, CliError> {
        let mut found = Vec::new();
        let mut i = 0;
        let prefix = format!("{name}=");
        while i < self.rest.len() {
            if self.rest[i] == name {
                if i + 1 >= self.rest.len() {
                    return Err(CliError(format!("{name} needs a value")));
                }
                found.push(self.rest.remove(i + 1));
                self.rest.remove(i);
            } else if let Some(v) = self.rest[i].strip_prefix(&prefix) {
                found.push(v.to_string());
                self.rest.remove(i);
            } else {
                i += 1;
            }
        }
        Ok(found)
    }

    /// The next argument that is neither an option nor the value of a global option, so that
    /// `tenantd --data DIR members add` finds `members`, then `add`.
    pub fn positional(&mut self) -> Option<String> {
        let mut i = 0;
        while i < self.rest.len() {
            let a = &self.rest[i];
            if GLOBAL_VALUE_OPTIONS.contains(&a.as_str()) {
                i += 2;
            } else if a.starts_with("--") {
                i += 1;
            } else {
                return Some(self.rest.remove(i));
            }
        }
        None
    }

    pub fn finish(self) -> Result<(), CliError> {
        self.finish_ref()
    }

    /// Refuses whatever no one took.
    pub fn finish_ref(&self) -> Result<(), CliError> {
        match self.rest.first() {
            None => Ok(()),
            Some(a) => Err(CliError(format!("unexpected argument: {a}"))),
        }
    }
}

const HELP: &str = "\
tenantd: a self-hosted multi-tenant server

Usage: tenantd [--data DIR] <command> [options]
       tenantd --version

Commands:
  serve      Run the HTTP server
  tenants    Create, list, suspend, delete, restore, purge, rename, import tenants; manage
             domains; maintenance per tenant (down, up); a read-only query over each (exec)
  migrate    Migrate the catalog and every tenant database (or show their versions)
  users      Create user accounts
  members    Add users to tenants with a role, or invite them
  admin      Create system admins, reset their passwords
  export     Write a company's data to a zip archive (JSON Lines per table)
  jobs       List, show, retry and discard background jobs; fire due schedules
  schedules  List, add and remove recurring jobs
  backup     Back up tenant databases (and the catalog) while the server runs
  backups    List a tenant's backups
  restore    Restore a tenant from a backup, or clone a backup as a new tenant
  realtime   Show the real-time channels' app id, key and secret
  down, up   Put the whole server in maintenance mode, or end it
  plans      List and edit plans (limits, features); a tenant's: `tenants plan`
  billing    The billing inbound webhook's secret (a payment provider sets plans)
  litestream Print a Litestream configuration for the catalog and every tenant file
  help       Show this help (`tenantd help <command>`: that command's)

Every command works on a data directory: --data DIR, else TENANTD_DATA, else ./data.
Only `serve` makes a new one; the other commands need one that `serve` has started in.
Run `tenantd <command> --help` for the options of a command.
";

pub const SERVE_HELP: &str = "\
tenantd serve: run the HTTP server

Usage: tenantd serve [options]

Options (each falls back to the environment variable named, then the default):
  --bind ADDR              Address to listen on [TENANTD_BIND, 127.0.0.1:8080]
                           Port 0 picks a free port; the URL is printed at start.
  --data DIR               Data directory [TENANTD_DATA, ./data]
  --demo                   Create two demo companies (acme, globex) with people in every
                           role, chats and orders, and print how to log in (safe to repeat;
                           an acme or globex the demo did not create is skipped)
  --base-domain DOMAIN     Hosts <slug>.DOMAIN name tenants; DOMAIN itself is central
                           [TENANTD_BASE_DOMAIN, localhost]
  --central-host HOST      Another host that reaches the central routes; repeatable
                           [TENANTD_CENTRAL_HOSTS, comma-separated, none]
  --default-tenant SLUG    Requests on a central host that name no tenant go to SLUG
                           (one URL for a single-company install); the admin portal
                           moves to /admin, the admin API (/api/admin/...) and inbound
                           webhooks stay central [TENANTD_DEFAULT_TENANT, none]
  --default-plan PLAN      The plan new tenants get (`tenantd plans list`)
                           [TENANTD_DEFAULT_PLAN, unlimited]
  --billing-grace SECS     How long a past_due subscription keeps writing after its
                           period ended (60 to a year) [TENANTD_BILLING_GRACE, 604800]
  --max-open-tenants N     Tenant databases kept open at once; the least recently used
                           idle one is closed past it [TENANTD_MAX_OPEN_TENANTS, 256]
  --read-cache-mib N       MiB of read answers kept, for all tenants together, while
                           their database files are unchanged; 0 turns this off
                           [TENANTD_READ_CACHE_MIB, 32]
  --checkpoints WHO        Who checkpoints tenant files: tenantd (its own thread, every 64
                           writes) or litestream (tenantd runs none; for `litestream
                           replicate` beside it, see `tenantd litestream --help`)
                           [TENANTD_CHECKPOINTS, tenantd]
  --workers N              Handler threads [TENANTD_WORKERS, 16]
  --max-connections N      Open connections at most; at it, idle and unfinished ones are
                           closed to make room, else new ones get 503 [TENANTD_MAX_CONNECTIONS,
                           the open-file limit less 3 per --max-open-tenants and 64]
  --max-client-connections N
                           Connections (and WebSockets) one client address may hold; not
                           applied to --trusted-proxy peers [TENANTD_MAX_CLIENT_CONNECTIONS,
                           an eighth of the cap, at least 64]
  --max-websockets N       WebSockets open at most [TENANTD_MAX_WEBSOCKETS, half the cap]
  --subscribe-timeout SECS A WebSocket with no subscription this long is closed (4202)
                           [TENANTD_SUBSCRIBE_TIMEOUT, 30]
  --redis-url URL          Redis (redis://[:password@]host:port) through which real-time
                           events, revocations and presence reach the other tenantd nodes
                           serving this catalog's app, and theirs reach this one
                           [TENANTD_REDIS_URL, none: this node alone]
  --store local|sqld       Where new tenants' databases go: files under the data
                           directory, or namespaces of a libSQL server (sqld); tenants
                           already made stay where they are [TENANTD_STORE, local]
  --sqld-url URL           The libSQL server's Hrana endpoint, like http://db:8080
                           [TENANTD_SQLD_URL, none]
  --sqld-admin-url URL     Its admin API, which creates and deletes namespaces
                           (--admin-listen-addr) [TENANTD_SQLD_ADMIN_URL, none]
  --sqld-auth-token T      Sent as a bearer token on every Hrana request
                           [TENANTD_SQLD_AUTH_TOKEN, none]
  --head-timeout SECS      Time allowed for a whole request head, counted from when
                           the connection is ready (idle keep-alive included)
                           [TENANTD_HEAD_TIMEOUT, 10]
  --io-timeout SECS        Longest wait for a response write to make progress
                           [TENANTD_IO_TIMEOUT, 10]
  --body-timeout SECS      Time allowed for a whole request body [TENANTD_BODY_TIMEOUT, 30]
  --max-body BYTES         Default request body limit [TENANTD_MAX_BODY, 1048576]
  --allowed-origin ORIGIN  A browser origin (https://app.example.com) allowed to open
                           real-time WebSockets besides the server's own hosts; repeatable
                           [TENANTD_ALLOWED_ORIGINS, comma-separated]
  --trusted-proxy IP       A proxy whose X-Forwarded-For is believed; repeatable
                           [TENANTD_TRUSTED_PROXIES, comma-separated, none]
  --shutdown-grace SECS    How long SIGINT/SIGTERM waits for requests in flight
                           [TENANTD_SHUTDOWN_GRACE, 10]
  --webhooks-allow-private Deliver webhooks to private and loopback addresses too
                           (on-premises) [TENANTD_WEBHOOKS_ALLOW_PRIVATE=1]
  --webhooks-max-failures N
                           Disable a webhook endpoint after N failed attempts in a row
                           [TENANTD_WEBHOOKS_MAX_FAILURES, 20]
  --webhooks-max-failing SECS
                           ...or once it has failed for this long [TENANTD_WEBHOOKS_MAX_FAILING,
                           86400]
  --webhooks-rotation-grace SECS
                           A rotated webhook secret keeps signing this long
                           [TENANTD_WEBHOOKS_ROTATION_GRACE, 86400]
  --job-workers Q=N,...    Background job worker threads per queue (default, webhooks,
                           inbound, exports) [TENANTD_JOB_WORKERS,
                           default=2,webhooks=2,inbound=1,exports=1]
  --job-poll SECS          How often workers look for jobs other processes enqueued, and
                           leases and schedules are checked [TENANTD_JOB_POLL, 1]
  --job-retention SECS     Done and discarded jobs are removed after this
                           [TENANTD_JOB_RETENTION, 604800]
  --job-backoff SECS       Delay before a failed job's second attempt; doubles per attempt,
                           with jitter [TENANTD_JOB_BACKOFF, 2]
  --tenant-rate N          Requests a minute per tenant on its routes, bursts of a minute's
                           worth; past it 429 with Retry-After; 0 = off [TENANTD_TENANT_RATE, 6000]
  --member-rate N          The same per member of a tenant [TENANTD_MEMBER_RATE, 1200]
  --metrics-bind ADDR      Serve /metrics and /readyz (nothing else) on this address too, e.g.
                           127.0.0.1:9090 [TENANTD_METRICS_BIND, none]
  --metrics-token TOKEN    Serve /metrics on the main address to `Authorization: Bearer
                           TOKEN`, and require it on --metrics-bind too; with neither set,
                           /metrics is 404 [TENANTD_METRICS_TOKEN, none]
  --metrics-tenants K      Tenants named in the per-tenant series (the first asked for);
                           the rest are summed as tenant=_other [TENANTD_METRICS_TENANTS, 20]
  --ready-min-free-mib N   /readyz answers 503 below this much free space in the data
                           directory [TENANTD_READY_MIN_FREE_MIB, 64]
  --log-format FORMAT      text, or json: one JSON object a line (time, level, target,
                           message, tenant when known) [TENANTD_LOG_FORMAT, text]
  -h, --help               Show this help

  --session-idle SECS      A session unused this long ends [TENANTD_SESSION_IDLE, 43200]
  --session-lifetime SECS  A session ends this long after login [TENANTD_SESSION_LIFETIME, 604800]
  --secure-cookies         Mark the session cookie Secure (served over HTTPS)
                           [TENANTD_SECURE_COOKIES=1]

On the first run with no system admin, admin@localhost is created with a random password,
printed once; `tenantd admin reset-password --email admin@localhost` makes a new one.
Only serve starts a new data directory. At start it removes tenant files that no catalog
row names and that have not changed for 10 minutes (see `tenantd tenants --help`, gc).
Logging follows RUST_LOG (default: info, one line per request).
";

/// One command: its name, its line in `tenantd --help`, its own help and what runs it. Adding a
/// command is one entry here; adding a subcommand is local to the command's own function and
/// help text.
struct Command {
    name: &'static str,
    help: &'static str,
    run: fn(&mut Args, &Env) -> Result<i32, tenants::CommandError>,
}

const COMMANDS: &[Command] = &[
    Command {
        name: "serve",
        help: SERVE_HELP,
        run: |args, env| {
            let config = ServeConfig::from_args(&mut Given(args, env)).map_err(CliError::from)?;
            args.finish_ref()?;
            Ok(crate::serve::run(config))
        },
    },
    Command {
        name: "tenants",
        help: tenants::TENANTS_HELP,
        run: |args, env| tenants::tenants(args, env).map(|()| 0),
    },
    Command {
        name: "migrate",
        help: tenants::MIGRATE_HELP,
        run: |args, env| tenants::migrate(args, env).map(|()| 0),
    },
    Command {
        name: "users",
        help: identity::USERS_HELP,
        run: |args, env| identity::users(args, env).map(|()| 0),
    },
    Command {
        name: "members",
        help: identity::MEMBERS_HELP,
        run: |args, env| identity::members(args, env).map(|()| 0),
    },
    Command {
        name: "admin",
        help: identity::ADMIN_HELP,
        run: |args, env| identity::admin(args, env).map(|()| 0),
    },
    Command {
        name: "export",
        help: export::EXPORT_HELP,
        run: |args, env| export::export(args, env).map(|()| 0),
    },
    Command {
        name: "jobs",
        help: jobs::JOBS_HELP,
        run: |args, env| jobs::jobs(args, env).map(|()| 0),
    },
    Command {
        name: "schedules",
        help: jobs::SCHEDULES_HELP,
        run: |args, env| jobs::schedules(args, env).map(|()| 0),
    },
    Command {
        name: "backup",
        help: backup::BACKUP_HELP,
        run: |args, env| backup::backup(args, env).map(|()| 0),
    },
    Command {
        name: "backups",
        help: backup::BACKUPS_HELP,
        run: |args, env| backup::backups(args, env).map(|()| 0),
    },
    Command {
        name: "restore",
        help: backup::RESTORE_HELP,
        run: |args, env| backup::restore(args, env).map(|()| 0),
    },
    Command {
        name: "realtime",
        help: REALTIME_HELP,
        run: realtime_command,
    },
    Command {
        name: "down",
        help: maintenance::DOWN_HELP,
        run: |args, env| maintenance::server(true, args, env).map(|()| 0),
    },
    Command {
        name: "up",
        help: maintenance::DOWN_HELP,
        run: |args, env| maintenance::server(false, args, env).map(|()| 0),
    },
    Command {
        name: "plans",
        help: plans::PLANS_HELP,
        run: |args, env| plans::plans(args, env).map(|()| 0),
    },
    Command {
        name: "billing",
        help: plans::BILLING_HELP,
        run: |args, env| plans::billing(args, env).map(|()| 0),
    },
    Command {
        name: "litestream",
        help: litestream::LITESTREAM_HELP,
        run: |args, env| litestream::litestream(args, env).map(|()| 0),
    },
];

/// The `Usage:` lines of a help text (up to its first blank line after them).
fn usage_of(help: &str) -> String {
    let mut out = String::new();
    for line in help.lines().skip_while(|l| !l.starts_with("Usage:")) {
        if line.trim().is_empty() {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Runs one command and returns the process exit status.
pub fn run(argv: Vec<String>) -> i32 {
    let mut args = Args::new(argv);
    let wants_help = args.flag("--help") | args.flag("-h");
    if args.flag("--version") | args.flag("-V") {
        println!("tenantd {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    let name = args.positional();
    let name = match name.as_deref() {
        None => {
            print!("{HELP}");
            return if wants_help { 0 } else { 2 };
        }
        // `tenantd help` and `tenantd help <command>`.
        Some("help") => match args.positional() {
            None => {
                print!("{HELP}");
                return 0;
            }
            Some(topic) => topic,
        },
        Some(name) if wants_help => name.to_string(),
        Some(name) => {
            let Some(command) = COMMANDS.iter().find(|c| c.name == name) else {
                eprintln!("tenantd: unknown command: {name}\n\n{HELP}");
                return 2;
            };
            if command.name != "serve" {
                // Rust ignores SIGPIPE, so printing to a reader that went away (`tenantd
                // tenants list | head -1`) panics; a command-line tool should end quietly, as
                // the signal ends others. Not for `serve`: its sockets report a gone peer as
                // an error to handle, and the signal would kill the server.
                // SAFETY: restoring a signal's default disposition, before any thread starts.
                unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            }
            return match (command.run)(&mut args, &Env::process()) {
                Ok(code) => code,
                Err(tenants::CommandError::Usage(e)) => {
                    eprintln!(
                        "tenantd: {e}\n\n{}\nRun `tenantd {name} --help` for its options.",
                        usage_of(command.help)
                    );
                    2
                }
                Err(tenants::CommandError::Operation(message)) => {
                    eprintln!("tenantd: {message}");
                    1
                }
            };
        }
    };
    match COMMANDS.iter().find(|c| c.name == name) {
        Some(command) => {
            print!("{}", command.help);
            0
        }
        None => {
            eprintln!("tenantd: unknown command: {name}\n\n{HELP}");
            2
        }
    }
}

const REALTIME_HELP: &str = "\
tenantd realtime: the real-time channels (Pusher protocol)

Usage: tenantd realtime credentials [--json] [--data DIR]

Options:
  --data DIR   Data directory [TENANTD_DATA, ./data]
  --json       Print JSON instead of text
  --store, --sqld-url, --sqld-admin-url, --sqld-auth-token
               Where the catalog is, as `serve` takes them (`--store sqld`: on sqld)

Prints the app id, key and secret that Pusher clients and publishers use: the key in
pusher-js or Laravel Echo, all three in a Pusher server SDK. Made on the first run.
";

fn realtime_command(args: &mut Args, env: &Env) -> Result<i32, tenants::CommandError> {
    let data = data_dir(args, env)?;
    let stores = tenant_stores(args, env)?;
    let json = args.flag("--json");
    match args.positional().as_deref() {
        Some("credentials") => {}
        other => {
            return Err(CliError(format!(
                "unknown realtime command: {}",
                other.unwrap_or("(none)")
            ))
            .into())
        }
    }
    args.finish_ref()?;
    let catalog = tenants::open_catalog_in(&data, &stores)?;
    let c = crate::realtime::Credentials::load_or_create(&catalog)
        .map_err(|e| tenants::CommandError::Operation(e.to_string()))?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "app_id": c.app_id, "key": c.key, "secret": c.secret })
        );
    } else {
        println!(
            "app_id: {}\nkey:    {}\nsecret: {}",
            c.app_id, c.key, c.secret
        );
    }
    Ok(0)
}

/// The command line, then the environment: what [`config`] reads settings from.
struct Given<'a>(&'a mut Args, &'a Env);

impl config::Source for Given<'_> {
    fn flag(&mut self, name: &str) -> bool {
        self.0.flag(name)
    }

    fn values(&mut self, name: &str) -> Result<Vec<String>, ConfigError> {
        self.0.values(name).map_err(|e| ConfigError(e.0))
    }

    fn var(&self, name: &str) -> Option<String> {
        self.1.get(name)
    }
}

/// `--data DIR`, else `TENANTD_DATA`, else `./data` (see [`config::data_dir`]).
fn data_dir(args: &mut Args, env: &Env) -> Result<PathBuf, CliError> {
    Ok(config::data_dir(&mut Given(args, env))?)
}

/// `--store` and the sqld options, as `serve` takes them.
fn tenant_stores(args: &mut Args, env: &Env) -> Result<crate::catalog::TenantStores, CliError> {
    Ok(config::tenant_stores(&mut Given(args, env))?)
}

/// Where option fallbacks come from: the process environment, or a fixed map in tests.
pub struct Env(Vec<(String, String)>);

impl Env {
    pub fn process() -> Env {
        Env(std::env::vars().collect())
    }

    pub fn from_pairs(pairs: &[(&str, &str)]) -> Env {
        Env(pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Args {
        Args::new(s.split_whitespace().map(String::from).collect())
    }

    #[test]
    fn options_are_taken_in_both_spellings() {
        let mut a = args("create acme --name Acme --domain a.test --domain=b.test --json");
        assert_eq!(a.positional().as_deref(), Some("create"));
        assert!(a.flag("--json"));
        assert_eq!(a.value("--name").unwrap().as_deref(), Some("Acme"));
        assert_eq!(a.values("--domain").unwrap(), vec!["a.test", "b.test"]);
        assert_eq!(a.positional().as_deref(), Some("acme"));
        assert!(a.finish().is_ok());
    }

    #[test]
    fn leftovers_and_missing_values_are_errors() {
        let mut a = args("--bind");
        assert!(a.value("--bind").is_err());
        let a = args("--bnid 1");
        assert!(a.finish().is_err());
    }
}
