//! The command line: argument parsing and one function per command. `main.rs` only calls [`run`].

mod identity;
mod tenants;

use std::fmt;

use crate::config::ServeConfig;

/// A command-line mistake: printed with a hint to `--help`, exit status 2.
#[derive(Debug, PartialEq, Eq)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

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

    /// The next argument that is not an option.
    pub fn positional(&mut self) -> Option<String> {
        let i = self.rest.iter().position(|a| !a.starts_with("--"))?;
        Some(self.rest.remove(i))
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

Usage: tenantd <command> [options]

Commands:
  serve      Run the HTTP server
  tenants    Create, list, suspend, delete, restore, purge, rename tenants; manage domains
  migrate    Migrate the catalog and every tenant database (or show their versions)
  users      Create user accounts
  members    Add users to tenants with a role
  admin      Create system admins, reset their passwords
  realtime   Show the real-time channels' app id, key and secret
  help       Show this help

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
                           role, chats and orders, and print how to log in (safe to repeat)
  --base-domain DOMAIN     Hosts <slug>.DOMAIN name tenants; DOMAIN itself is central
                           [TENANTD_BASE_DOMAIN, localhost]
  --central-host HOST      Another host that reaches the central routes; repeatable
                           [TENANTD_CENTRAL_HOSTS, comma-separated, none]
  --max-open-tenants N     Tenant databases kept open at once; the least recently used
                           idle one is closed past it [TENANTD_MAX_OPEN_TENANTS, 256]
  --read-cache-mib N       MiB of read answers kept, for all tenants together, while
                           their database files are unchanged; 0 turns this off
                           [TENANTD_READ_CACHE_MIB, 32]
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
  -h, --help               Show this help

  --session-idle SECS      A session unused this long ends [TENANTD_SESSION_IDLE, 43200]
  --session-lifetime SECS  A session ends this long after login [TENANTD_SESSION_LIFETIME, 604800]
  --secure-cookies         Mark the session cookie Secure (served over HTTPS)
                           [TENANTD_SECURE_COOKIES=1]

On the first run with no system admin, admin@localhost is created with a random password,
printed once.
Logging follows RUST_LOG (default: info, one line per request).
";

/// Runs one command and returns the process exit status.
pub fn run(argv: Vec<String>) -> i32 {
    let mut args = Args::new(argv);
    let wants_help = args.flag("--help") | args.flag("-h");
    let command = args.positional();
    let result = match command.as_deref() {
        None | Some("help") => {
            print!("{HELP}");
            return if wants_help || command.is_some() {
                0
            } else {
                2
            };
        }
        Some("serve") if wants_help => {
            print!("{SERVE_HELP}");
            return 0;
        }
        Some("serve") => ServeConfig::from_args(&mut args, &Env::process())
            .and_then(|config| args.finish().map(|()| config))
            .map(crate::serve::run),
        Some("tenants") if wants_help => {
            print!("{}", tenants::TENANTS_HELP);
            return 0;
        }
        Some("migrate") if wants_help => {
            print!("{}", tenants::MIGRATE_HELP);
            return 0;
        }
        Some("users") if wants_help => {
            print!("{}", identity::USERS_HELP);
            return 0;
        }
        Some("members") if wants_help => {
            print!("{}", identity::MEMBERS_HELP);
            return 0;
        }
        Some("admin") if wants_help => {
            print!("{}", identity::ADMIN_HELP);
            return 0;
        }
        Some("realtime") => {
            let env = Env::process();
            return match realtime_command(&mut args, &env, wants_help) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("tenantd: {e}\nRun `tenantd realtime --help` for usage.");
                    2
                }
            };
        }
        Some(command @ ("tenants" | "migrate" | "users" | "members" | "admin")) => {
            let env = Env::process();
            let result = match command {
                "tenants" => tenants::tenants(&mut args, &env),
                "migrate" => tenants::migrate(&mut args, &env),
                "users" => identity::users(&mut args, &env),
                "members" => identity::members(&mut args, &env),
                _ => identity::admin(&mut args, &env),
            };
            match result {
                Ok(()) => Ok(0),
                Err(tenants::Failure::Usage(e)) => Err(e),
                Err(tenants::Failure::Operation(message)) => {
                    eprintln!("tenantd: {message}");
                    Ok(1)
                }
            }
        }
        Some(other) => Err(CliError(format!("unknown command: {other}"))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tenantd: {e}\nRun `tenantd --help` for usage.");
            2
        }
    }
}

const REALTIME_HELP: &str = "\
tenantd realtime: the real-time channels (Pusher protocol)

Usage: tenantd realtime credentials [--json] [--data DIR]

Prints the app id, key and secret that Pusher clients and publishers use: the key in
pusher-js or Laravel Echo, all three in a Pusher server SDK. Made on the first run.
";

fn realtime_command(args: &mut Args, env: &Env, help: bool) -> Result<i32, CliError> {
    if help {
        print!("{REALTIME_HELP}");
        return Ok(0);
    }
    let data = crate::config::data_dir(args, env)?;
    let json = args.flag("--json");
    match args.positional().as_deref() {
        Some("credentials") => {}
        other => {
            return Err(CliError(format!(
                "unknown realtime command: {}",
                other.unwrap_or("(none)")
            )))
        }
    }
    args.finish_ref()?;
    let catalog = match tenants::open_catalog(&data, crate::db::Create::Never) {
        Ok(c) => c,
        Err(tenants::Failure::Usage(e)) => return Err(e),
        Err(tenants::Failure::Operation(message)) => {
            eprintln!("tenantd: {message}");
            return Ok(1);
        }
    };
    let c = match crate::api::Credentials::load_or_create(&catalog) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tenantd: {e}");
            return Ok(1);
        }
    };
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
