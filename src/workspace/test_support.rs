//! A real tenant for the workspace tests: a catalog and a provisioned tenant
//! file in a temporary directory, opened (and migrated) through the registry.

use std::collections::BTreeMap;

use tempfile::TempDir;

use super::{Reader, WorkspaceError};
use crate::catalog::Catalog;
use crate::db::Create;
use crate::tenancy::lifecycle::{self, NewTenant};
use crate::tenancy::{Registry, RegistryConfig, Tenant};

/// Fields are dropped in order: the tenant before its registry, the
/// directory last.
pub(crate) struct TestTenant {
    pub tenant: Tenant,
    _registry: Registry,
    _catalog: Catalog,
    _dir: TempDir,
}

pub(crate) fn tenant() -> TestTenant {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(dir.path(), Create::IfMissing).unwrap();
    let record = lifecycle::create(
        &catalog,
        &NewTenant {
            slug: "acme".into(),
            name: "Acme".into(),
            domains: vec![],
        },
    )
    .unwrap();
    let registry = Registry::new(
        dir.path(),
        RegistryConfig {
            idle_timeout: None,
            ..RegistryConfig::default()
        },
    );
    let tenant = registry.open(record).unwrap();
    TestTenant {
        tenant,
        _registry: registry,
        _catalog: catalog,
        _dir: dir,
    }
}

pub(crate) fn reader(user_id: i64, permissions: &[&str]) -> Reader {
    Reader::new(user_id, permissions.iter().copied(), false)
}

pub(crate) fn admin(user_id: i64) -> Reader {
    Reader::new(user_id, Vec::<String>::new(), true)
}

/// Users 1..=9 are members of the tenant; anyone else is not.
pub(crate) fn is_member(user_id: i64) -> bool {
    (1..=9).contains(&user_id)
}

pub(crate) fn validation(
    result: Result<impl std::fmt::Debug, WorkspaceError>,
) -> BTreeMap<String, String> {
    match result {
        Err(WorkspaceError::Validation(fields)) => fields,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

/// The field names a validation error names.
pub(crate) fn fields(result: Result<impl std::fmt::Debug, WorkspaceError>) -> Vec<String> {
    validation(result).into_keys().collect()
}

pub(crate) fn is_not_found<T: std::fmt::Debug>(result: &Result<T, WorkspaceError>) -> bool {
    matches!(result, Err(WorkspaceError::NotFound))
}

pub(crate) fn forbidden<T: std::fmt::Debug>(result: Result<T, WorkspaceError>) -> String {
    match result {
        Err(WorkspaceError::Forbidden(what)) => what,
        other => panic!("expected Forbidden, got {other:?}"),
    }
}
