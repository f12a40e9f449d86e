//! The catalog's error type for tenant records, the snapshot and `meta`; identity has its own
//! (`IdentityError`, in `identity`).

use std::fmt;
use std::path::PathBuf;

use super::ValidationError;
use crate::db::DbError;
use crate::store::StoreError;

#[derive(Debug)]
pub enum CatalogError {
    Db(DbError),
    /// A statement through the store contract.
    Store(StoreError),
    Validation(ValidationError),
    SlugTaken(String),
    DomainTaken(String),
    /// No tenant with this id or slug.
    NotFound(String),
    DomainNotFound(String),
    /// No plan with this slug.
    PlanNotFound(String),
    /// A row the schema should have prevented (unknown status, bad JSON).
    Corrupt {
        id: String,
        message: String,
    },
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatalogError::Db(e) => write!(f, "catalog: {e}"),
            CatalogError::Store(e) => write!(f, "catalog: {e}"),
            CatalogError::Validation(e) => e.fmt(f),
            CatalogError::SlugTaken(slug) => write!(f, "slug {slug} is already taken"),
            CatalogError::DomainTaken(domain) => write!(f, "domain {domain} is already taken"),
            CatalogError::NotFound(tenant) => write!(f, "no tenant {tenant}"),
            CatalogError::DomainNotFound(domain) => write!(f, "no domain {domain}"),
            CatalogError::PlanNotFound(plan) => write!(f, "no plan {plan}"),
            CatalogError::Corrupt { id, message } => {
                write!(f, "catalog row for tenant {id} is corrupt: {message}")
            }
            CatalogError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for CatalogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CatalogError::Db(e) => Some(e),
            CatalogError::Store(e) => Some(e),
            CatalogError::Validation(e) => Some(e),
            CatalogError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<DbError> for CatalogError {
    fn from(e: DbError) -> Self {
        CatalogError::Db(e)
    }
}

impl From<StoreError> for CatalogError {
    fn from(e: StoreError) -> Self {
        CatalogError::Store(e)
    }
}

impl From<rusqlite::Error> for CatalogError {
    fn from(e: rusqlite::Error) -> Self {
        CatalogError::Db(DbError::Sqlite(e))
    }
}

impl From<r2d2::Error> for CatalogError {
    fn from(e: r2d2::Error) -> Self {
        CatalogError::Db(DbError::Pool(e))
    }
}

impl From<ValidationError> for CatalogError {
    fn from(e: ValidationError) -> Self {
        CatalogError::Validation(e)
    }
}
