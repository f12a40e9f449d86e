//! A real tenant for the workspace tests: a catalog and a provisioned tenant
//! file in a temporary directory, opened (and migrated) through the registry.

use std::collections::BTreeMap;

use super::{Reader, WorkspaceError};
use crate::tenancy::{Registry, Tenant};
use crate::test_kit::{quiet, Setup};

/// Fields are dropped in order: the tenant before its registry, the
/// catalog and its directory last.
pub(crate) struct TestTenant {
    pub tenant: Tenant,
    _registry: Registry,
    _setup: Setup,
}

pub(crate) fn tenant() -> TestTenant {
    let setup = Setup::new();
    let record = setup.provision("acme", &[]);
    let registry = setup.registry(quiet());
    let tenant = registry.open(record).unwrap();
    TestTenant {
        tenant,
        _registry: registry,
        _setup: setup,
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
