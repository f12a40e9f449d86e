//! `tenantd export <slug> [--to FILE]`: a company's archive (see `tenancy::export`) written to a
//! file, beside a running server or without one.

use std::fs;
use std::io::BufWriter;
use std::path::PathBuf;

use crate::db::Create;
use crate::tenancy::export::{file_name, write_archive};
use crate::tenancy::lifecycle;
use crate::tenancy::{Registry, RegistryConfig};

use super::tenants::{audit, open_catalog, CommandError};
use super::{Args, CliError, Env};

pub const EXPORT_HELP: &str = "\
tenantd export: write a company's data to a zip archive

Usage: tenantd export <slug> [--to FILE] [--data DIR] [--json]

Options:
  --to FILE   Where to write it [./<slug>-<yyyymmdd>.zip, the UTC date]
  --data DIR  Data directory [TENANTD_DATA, ./data]
  --json      Print what was written as JSON

The archive holds every table of the company's database as JSON Lines, its schema, the
catalog's rows about it (the company, domains, members and roles, audit entries) and a
README.md describing the format. It is written to FILE.tmp, then renamed. Safe while a
server runs on the same data directory: the tables are read in one read transaction.
";

pub fn export(args: &mut Args, env: &Env) -> Result<(), CommandError> {
    let data = super::data_dir(args, env)?;
    let json = args.flag("--json");
    let to = args.value("--to")?;
    let slug = args
        .positional()
        .ok_or_else(|| CliError("missing the <slug> argument".into()))?;
    args.finish_ref()?;
    let catalog = open_catalog(&data, Create::Never)?;
    let record = lifecycle::show(&catalog, &slug)?;
    let registry = Registry::new(&data, RegistryConfig::default());
    let failed =
        |e: &dyn std::fmt::Display| CommandError::Operation(format!("export of {slug}: {e}"));
    let tenant = registry.open(record.clone()).map_err(|e| failed(&e))?;
    let path = to
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(file_name(&slug, chrono::Utc::now())));
    let mut tmp = path.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let manifest = (|| -> Result<_, Box<dyn std::error::Error>> {
        let mut out = BufWriter::with_capacity(64 * 1024, fs::File::create(&tmp)?);
        let manifest = write_archive(&catalog, &tenant, &mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(&tmp, &path)?;
        Ok(manifest)
    })()
    .map_err(|e| {
        let _ = fs::remove_file(&tmp);
        failed(&e)
    })?;
    audit(&catalog, "tenant.exported", &record);
    let rows: u64 = manifest.tables.values().sum();
    if json {
        println!(
            "{}",
            serde_json::json!({ "file": path, "manifest": manifest })
        );
    } else {
        println!(
            "exported {slug} to {} ({} tables, {rows} rows, {} audit entries)",
            path.display(),
            manifest.tables.len(),
            manifest.audit_entries
        );
    }
    Ok(())
}
