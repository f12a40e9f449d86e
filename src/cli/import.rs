//! `tenantd tenants import`: an existing SQLite file with the tenant schema brought in as a new
//! tenant, checked and copied as `restore --as` does it (`backup::restore_as`), with a new id
//! written into the copy's `tenant_meta`. Safe beside a running server: nothing it holds is
//! touched, and the new tenant becomes active only once its file is in place.

use std::path::Path;
use std::sync::Arc;

use crate::catalog::{validate_name, Catalog, TenantRecord, TenantStatus};
use crate::db;
use crate::tenancy::backup::{self, BackupError};
use crate::tenancy::lifecycle::{self, Rename};
use crate::tenancy::tenant_db_path;

use super::tenants::CommandError;

/// Imports `from` as the new tenant `slug`, named `name` (else as the file says).
pub(super) fn import(
    catalog: &Catalog,
    slug: &str,
    from: &Path,
    name: Option<&str>,
) -> Result<Arc<TenantRecord>, CommandError> {
    let failed =
        |why: String| CommandError::Operation(format!("import of {}: {why}", from.display()));
    let name = name
        .map(validate_name)
        .transpose()
        .map_err(|e| failed(e.to_string()))?;
    if from
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
    {
        return Err(failed(
            "export archives (.zip) cannot be imported yet; import the tenant's database \
             file, or a backup of it (`tenantd backup <slug>`)"
                .into(),
        ));
    }
    let known_before = catalog.by_slug(slug).ok().flatten().map(|r| r.id.clone());
    if let Err(e) = backup::restore_as(catalog, from, slug) {
        remove_unfinished(catalog, slug, known_before.as_deref());
        return Err(failed(match e {
            BackupError::NotFound(_) => "no such file".into(),
            BackupError::Refused(why) => format!("refused: {why}"),
            other => other.to_string(),
        }));
    }
    match name {
        Some(name) => {
            let change = Rename {
                slug: None,
                name: Some(name),
            };
            Ok(lifecycle::rename(catalog, slug, &change)?.after)
        }
        None => Ok(lifecycle::show(catalog, slug)?),
    }
}

/// What a failed copy left: the `provisioning` row it made (not one that was there before) and
/// its file, so a refused import leaves nothing behind.
fn remove_unfinished(catalog: &Catalog, slug: &str, known_before: Option<&str>) {
    let Ok(Some(record)) = catalog.by_slug(slug) else {
        return;
    };
    if record.status != TenantStatus::Provisioning || known_before == Some(record.id.as_str()) {
        return;
    }
    if let Some(path) = tenant_db_path(catalog.data_dir(), &record.id) {
        if let Err(e) = db::remove_database_files(&path) {
            log::warn!("import: {} not removed: {e}", path.display());
            return;
        }
    }
    if let Err(e) = catalog.delete_row(&record.id) {
        log::warn!("import: the unfinished tenant {slug} not removed: {e}");
    }
}
