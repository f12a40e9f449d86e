//! `tenantd litestream config`: a Litestream configuration for the catalog and every tenant
//! file, each database with its own replica.

use std::path::{Path, PathBuf};

use super::tenants::{open_catalog, CommandError};
use super::{Args, CliError, Env};
use crate::catalog::{TenantStatus, CENTRAL_DB};
use crate::db::Create;
use crate::tenancy::{lifecycle, tenant_db_path};

pub const LITESTREAM_HELP: &str = "\
tenantd litestream: configuration for Litestream (continuous replication)

Usage: tenantd litestream config --replica DIR_OR_URL [--json]

Options:
  --data DIR              Data directory [TENANTD_DATA, ./data]
  --replica DIR_OR_URL    Where the replicas go: a directory (a file replica per database
                          under it), or a URL such as s3://bucket/prefix (one path per
                          database under it). Each database gets its own: `central` for
                          the catalog, the tenant's id (never its slug) for a tenant.
  --json                  Print the configuration as JSON (which Litestream reads too)

Prints a Litestream 0.5 configuration (YAML) listing central.db and the file of every
active or suspended tenant, by absolute path. Run the server with `--checkpoints
litestream` beside it, so that Litestream alone checkpoints:

  tenantd litestream config --replica /backups/tenantd > litestream.yml
  litestream replicate -config litestream.yml

Litestream reads its configuration only when it starts: after creating (or restoring) a
tenant, run the command again and restart `litestream replicate`; it carries on from
where each database was. A tenant created since is not replicated until then.
";

pub fn litestream(args: &mut Args, env: &Env) -> Result<(), CommandError> {
    let data = super::data_dir(args, env)?;
    let json = args.flag("--json");
    let replica = args.value("--replica")?;
    match args.positional().as_deref() {
        Some("config") => {}
        other => {
            return Err(CliError(format!(
                "unknown litestream command: {}",
                other.unwrap_or("(none)")
            ))
            .into())
        }
    }
    args.finish_ref()?;
    let replica = replica.ok_or_else(|| {
        CliError("--replica is required (a directory, or a URL such as s3://bucket/prefix)".into())
    })?;
    let replica = Replica::parse(&replica)?;
    let catalog = open_catalog(&data, Create::Never)?;
    // Litestream runs from wherever its configuration is kept: every path absolute.
    let data = data
        .canonicalize()
        .map_err(|e| CommandError::Operation(format!("{}: {e}", data.display())))?;
    let mut dbs = vec![(data.join(CENTRAL_DB), "central".to_string())];
    for tenant in lifecycle::list(&catalog)? {
        // A provisioning tenant has no finished file yet, and a deleted one's no longer
        // changes (its replica keeps what it had). One kept on sqld has no file here.
        if !matches!(
            tenant.status,
            TenantStatus::Active | TenantStatus::Suspended
        ) || tenant.store != crate::catalog::TenantStore::Local
        {
            continue;
        }
        if let Some(path) = tenant_db_path(&data, &tenant.id) {
            dbs.push((path, tenant.id.clone()));
        }
    }
    let config = config(&dbs, &replica);
    if json {
        println!("{config}");
    } else {
        print!("{}", yaml(&config));
    }
    Ok(())
}

/// Where the replicas of all databases go.
#[derive(Debug, PartialEq, Eq)]
enum Replica {
    /// A file replica per database in this directory.
    Dir(PathBuf),
    /// `scheme://…`: one path per database under it.
    Url(String),
}

impl Replica {
    fn parse(given: &str) -> Result<Replica, CliError> {
        let given = given.trim();
        if given.is_empty() {
            return Err(CliError("--replica: empty".into()));
        }
        if let Some((scheme, rest)) = given.split_once("://") {
            let scheme_ok = !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
            if !scheme_ok || rest.trim_matches('/').is_empty() {
                return Err(CliError(format!(
                    "--replica: expected a URL such as s3://bucket/prefix, got {given:?}"
                )));
            }
            return Ok(Replica::Url(given.trim_end_matches('/').to_string()));
        }
        let dir = Path::new(given);
        let dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| CliError(format!("--replica: {e}")))?
                .join(dir)
        };
        Ok(Replica::Dir(dir))
    }

    /// The replica of the database named `name` (`central` or a tenant id).
    fn for_db(&self, name: &str) -> serde_json::Value {
        match self {
            Replica::Dir(dir) => serde_json::json!({
                "type": "file",
                "path": dir.join(name).to_string_lossy(),
            }),
            Replica::Url(url) => serde_json::json!({ "url": format!("{url}/{name}") }),
        }
    }
}

/// The configuration: `dbs`, each with its path and its one replica (Litestream 0.5 keeps one
/// replica per database).
fn config(dbs: &[(PathBuf, String)], replica: &Replica) -> serde_json::Value {
    let dbs: Vec<serde_json::Value> = dbs
        .iter()
        .map(|(path, name)| {
            serde_json::json!({
                "path": path.to_string_lossy(),
                "replica": replica.for_db(name),
            })
        })
        .collect();
    serde_json::json!({ "dbs": dbs })
}

/// The configuration in block YAML. Every scalar is written as a JSON string, which YAML reads
/// as a double-quoted scalar with the same escapes, so no path can break the document.
fn yaml(config: &serde_json::Value) -> String {
    let mut out = String::from(
        "# Made by `tenantd litestream config`: run it again after adding a tenant.\ndbs:\n",
    );
    for db in config["dbs"].as_array().into_iter().flatten() {
        out.push_str(&format!("  - path: {}\n    replica:\n", db["path"]));
        for key in ["type", "path", "url"] {
            if let Some(value) = db["replica"].get(key) {
                out.push_str(&format!("      {key}: {value}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dbs() -> Vec<(PathBuf, String)> {
        vec![
            (PathBuf::from("/srv/data/central.db"), "central".into()),
            (
                PathBuf::from("/srv/data/tenants/0b6c3f0e-2d4a-4e55-9a51-6a1f2b3c4d5e.db"),
                "0b6c3f0e-2d4a-4e55-9a51-6a1f2b3c4d5e".into(),
            ),
        ]
    }

    /// Paths are written as double-quoted scalars, escaped as JSON escapes them (YAML 1.2
    /// reads JSON's escapes the same), so a quote, a colon or a `#` in a path stays in it. The
    /// integration test has Litestream itself read a configuration this makes.
    #[test]
    fn yaml_quotes_every_scalar() {
        let mut dbs = dbs();
        dbs.truncate(1);
        dbs[0].0 = PathBuf::from("/srv/odd: \"dir\" #x/central.db");
        let config = config(&dbs, &Replica::Url("s3://bucket/prefix".into()));
        assert_eq!(
            yaml(&config),
            "# Made by `tenantd litestream config`: run it again after adding a tenant.\n\
             dbs:\n  \
             - path: \"/srv/odd: \\\"dir\\\" #x/central.db\"\n    \
             replica:\n      \
             url: \"s3://bucket/prefix/central\"\n"
        );
    }

    #[test]
    fn each_database_has_its_own_replica_named_by_id() {
        let config = config(&dbs(), &Replica::Dir(PathBuf::from("/backups")));
        assert_eq!(config["dbs"][0]["path"], "/srv/data/central.db");
        assert_eq!(config["dbs"][0]["replica"]["type"], "file");
        assert_eq!(config["dbs"][0]["replica"]["path"], "/backups/central");
        assert_eq!(
            config["dbs"][1]["replica"]["path"],
            "/backups/0b6c3f0e-2d4a-4e55-9a51-6a1f2b3c4d5e"
        );
        let config = config_for_url("s3://bucket/prefix/");
        assert_eq!(
            config["dbs"][0]["replica"]["url"],
            "s3://bucket/prefix/central"
        );
        assert_eq!(
            config["dbs"][1]["replica"]["url"],
            "s3://bucket/prefix/0b6c3f0e-2d4a-4e55-9a51-6a1f2b3c4d5e"
        );
    }

    fn config_for_url(url: &str) -> serde_json::Value {
        config(&dbs(), &Replica::parse(url).unwrap())
    }

    #[test]
    fn replica_is_a_directory_or_a_url() {
        assert_eq!(
            Replica::parse("/b/").unwrap(),
            Replica::Dir(PathBuf::from("/b/"))
        );
        let relative = Replica::parse("backups").unwrap();
        assert!(matches!(relative, Replica::Dir(d) if d.is_absolute() && d.ends_with("backups")));
        assert_eq!(
            Replica::parse("file:///b").unwrap(),
            Replica::Url("file:///b".into())
        );
        for bad in ["", "s3://", "://x", "s 3://b"] {
            assert!(Replica::parse(bad).is_err(), "{bad:?}");
        }
    }
}
