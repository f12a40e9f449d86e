//! `tenantd backup`, `tenantd backups list` and `tenantd restore`: backups of tenant files and
//! of the catalog from the shell, on the same functions as the admin API. A backup is safe
//! beside a running server (an online copy); a restore in place is not, and takes the data
//! directory's claim for its duration (see `data_dir`), which a running server holds.

use std::path::{Path, PathBuf};

use crate::catalog::Catalog;
use crate::data_dir::{self, ClaimError};
use crate::db::Create;
use crate::tenancy::backup::{self, BackupError, BackupManifest, CENTRAL};

use super::tenants::{audit_with, open_catalog, CommandError};
use super::{Args, CliError, Env};

pub const BACKUP_HELP: &str = "\
tenantd backup: an online, consistent copy of tenant databases (and of the catalog)

Usage: tenantd backup <slug>... | --all [--catalog] [--to DIR] [--json] [--data DIR]

Options:
  --all          Every active tenant
  --catalog      The catalog (central.db) too; alone, only the catalog
  --to DIR       Write into DIR/<tenant-id>/ (DIR/central/ for the catalog) instead of
                 the data directory's backups/<tenant-id>/ (backups/central/)
  --data DIR     Data directory [TENANTD_DATA, ./data]
  --json         Print JSON instead of text
  -h, --help     Show this help

Safe while a server runs on the same data directory: each copy is one snapshot of the
file, taken while the server keeps writing. Each backup <stamp>-<hex>.db gets a manifest
beside it (<stamp>-<hex>.json): tenant id and slug, schema version, size, SHA-256, time and
tenantd version. Files are written as .tmp, synced, then renamed.
";

pub const BACKUPS_HELP: &str = "\
tenantd backups: the backups of a tenant

Usage: tenantd backups list <slug> [--json] [--data DIR]

Options:
  --data DIR     Data directory [TENANTD_DATA, ./data]
  --json         Print JSON instead of text
  -h, --help     Show this help

Lists the tenant's backups in the data directory's backups/<tenant-id>/, newest first,
with the files that restores kept aside (replaced-...).
";

pub const RESTORE_HELP: &str = "\
tenantd restore: replace a tenant's database with a backup, or clone a backup as a new tenant

Usage: tenantd restore <slug> --from FILE [--as NEW_SLUG] [--json] [--data DIR]

Options:
  --from FILE      The backup file (a manifest beside it, FILE's name with .json, is checked)
  --as NEW_SLUG    Make a new tenant NEW_SLUG (a new id, no domains) from the backup, which
                   may be of any tenant; <slug>'s own database is left alone
  --data DIR       Data directory [TENANTD_DATA, ./data]
  --json           Print JSON instead of text
  -h, --help       Show this help

The file is checked first: its manifest's size and SHA-256, integrity_check, that it is
<slug>'s (its tenant_meta id), and a schema version this binary knows. The current file is
kept as backups/<tenant-id>/replaced-<stamp>-<hex>.db, then the backup replaces it in one
rename; an older schema is migrated. Killed at any point, the tenant has its old file or
the new one, whole. A restore in place needs the server stopped; while one runs, restore
through it: POST /api/admin/tenants/<slug>/backups/restore {\"backup\": \"<file name>\"}.
--as works beside a running server.
";

fn op(e: impl std::fmt::Display) -> CommandError {
    CommandError::Operation(e.to_string())
}

fn now() -> i64 {
    crate::catalog::unix_now()
}

fn print_manifest(m: &BackupManifest, dir: &Path) {
    println!(
        "{}: {} ({} bytes, schema {}, sha256 {})",
        m.slug,
        dir.join(&m.file).display(),
        m.bytes,
        m.schema_version,
        m.sha256
    );
}

fn tenant(
    catalog: &Catalog,
    slug: &str,
) -> Result<std::sync::Arc<crate::catalog::TenantRecord>, CommandError> {
    catalog
        .by_slug(slug)
        .map_err(op)?
        .ok_or_else(|| op(format!("no tenant {slug}")))
}

pub fn backup(args: &mut Args, env: &Env) -> Result<(), CommandError> {
    let data = super::data_dir(args, env)?;
    let json = args.flag("--json");
    let all = args.flag("--all");
    let with_catalog = args.flag("--catalog");
    let to = args.value("--to")?.map(PathBuf::from);
    let mut slugs = Vec::new();
    while let Some(slug) = args.positional() {
        slugs.push(slug);
    }
    args.finish_ref()?;
    if all && !slugs.is_empty() {
        return Err(CliError("give slugs or --all, not both".into()).into());
    }
    if !all && slugs.is_empty() && !with_catalog {
        return Err(CliError("missing the <slug> argument (or --all, or --catalog)".into()).into());
    }
    let catalog = open_catalog(&data, Create::Never)?;
    let records = if all {
        backup::active_tenants(&catalog).map_err(op)?
    } else {
        slugs
            .iter()
            .map(|slug| tenant(&catalog, slug))
            .collect::<Result<_, _>>()?
    };
    let dir_of = |key: &str| match &to {
        Some(to) => to.join(key),
        None => backup::backups_dir(&data, key).unwrap_or_default(),
    };
    let mut taken = Vec::new();
    let mut failed = Vec::new();
    for record in &records {
        let dir = dir_of(&record.id);
        match backup::backup_tenant(&data, record, Some(&dir), now()) {
            Ok(m) => {
                if !json {
                    print_manifest(&m, &dir);
                }
                taken.push(m);
            }
            Err(e) => {
                eprintln!("tenantd: {}: {e}", record.slug);
                failed.push(record.slug.clone());
            }
        }
    }
    if with_catalog {
        let dir = dir_of(CENTRAL);
        match backup::backup_catalog(&data, Some(&dir), now()) {
            Ok(m) => {
                if !json {
                    print_manifest(&m, &dir);
                }
                taken.push(m);
            }
            Err(e) => {
                eprintln!("tenantd: the catalog: {e}");
                failed.push(CENTRAL.to_string());
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "backups": taken, "failed": failed })
        );
    }
    if !failed.is_empty() {
        return Err(op(format!("{} backups failed", failed.len())));
    }
    Ok(())
}

pub fn backups(args: &mut Args, env: &Env) -> Result<(), CommandError> {
    let data = super::data_dir(args, env)?;
    let json = args.flag("--json");
    match args.positional().as_deref() {
        Some("list") => {}
        other => {
            return Err(CliError(format!(
                "unknown backups command: {}",
                other.unwrap_or("(none)")
            ))
            .into())
        }
    }
    let slug = args
        .positional()
        .ok_or_else(|| CliError("missing the <slug> argument".into()))?;
    args.finish_ref()?;
    let catalog = open_catalog(&data, Create::Never)?;
    let record = tenant(&catalog, &slug)?;
    let list = backup::list(&data, &record.id);
    if json {
        println!("{}", serde_json::json!({ "backups": list }));
    } else if list.is_empty() {
        println!("no backups of {slug}");
    } else {
        let dir = backup::backups_dir(&data, &record.id).unwrap_or_default();
        for m in &list {
            println!(
                "{}  {}  {:>12} bytes  schema {}",
                crate::db::format_unix_ms(m.created_at * 1000),
                dir.join(&m.file).display(),
                m.bytes,
                m.schema_version
            );
        }
    }
    Ok(())
}

pub fn restore(args: &mut Args, env: &Env) -> Result<(), CommandError> {
    let data = super::data_dir(args, env)?;
    let json = args.flag("--json");
    let from = args
        .value("--from")?
        .ok_or_else(|| CliError("--from FILE is required".into()))?;
    let new_slug = args.value("--as")?;
    let slug = args
        .positional()
        .ok_or_else(|| CliError("missing the <slug> argument".into()))?;
    args.finish_ref()?;
    let from = PathBuf::from(from);
    let catalog = open_catalog(&data, Create::Never)?;
    let record = tenant(&catalog, &slug)?;
    let refused = |e: BackupError| op(format!("restore of {slug} from {}: {e}", from.display()));
    let restored = match &new_slug {
        // A new tenant and a new file: nothing the server holds is touched.
        Some(new_slug) => backup::restore_as(&catalog, &from, new_slug).map_err(refused)?,
        None => {
            // Held until the restore is done: no server starts on the directory meanwhile.
            let _claim = data_dir::claim(&data).map_err(|e| match e {
                ClaimError::Taken { pid, .. } => op(format!(
                    "a tenantd server is running on {}{}: it holds {slug}'s database open, so \
                     the file cannot be replaced from here. Restore through the server instead \
                     (POST /api/admin/tenants/{slug}/backups/restore with {{\"backup\": \"<file \
                     name>\"}}, one of `tenantd backups list {slug}`), or stop it first",
                    data.display(),
                    pid.map(|p| format!(" (process {p})")).unwrap_or_default()
                )),
                other => op(other),
            })?;
            backup::restore_in_place(&data, None, &record, &from, now()).map_err(refused)?
        }
    };
    let target = match &new_slug {
        Some(new_slug) => tenant(&catalog, new_slug)?,
        None => record,
    };
    let action = if new_slug.is_some() {
        "tenant.cloned_from_backup"
    } else {
        "tenant.restored_from_backup"
    };
    audit_with(
        &catalog,
        action,
        &target,
        serde_json::json!({
            "via": "cli",
            "from": restored.from,
            "source_slug": slug,
            "replaced": restored.replaced.as_ref().map(|m| &m.file),
        }),
    );
    if json {
        println!("{}", serde_json::to_string(&restored).unwrap_or_default());
    } else {
        println!(
            "{} restored from {} (schema {})",
            restored.slug, restored.from, restored.schema_version
        );
        if let Some(kept) = &restored.replaced {
            let dir = backup::backups_dir(&data, &restored.tenant_id).unwrap_or_default();
            println!(
                "the replaced file is kept as {}",
                dir.join(&kept.file).display()
            );
        }
    }
    Ok(())
}
