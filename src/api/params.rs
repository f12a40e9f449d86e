//! Path and query parameters: a numeric id, a tenant named by its id or slug, a number.

use std::sync::Arc;

use crate::catalog::{Catalog, TenantRecord};
use crate::error::Error;
use crate::http::{Params, Request};

/// A tenant named by its id (a UUID, any spelling) or its slug. Slugs never look like UUIDs, so
/// the two cannot be confused.
pub(super) fn tenant_by_key(
    catalog: &Catalog,
    key: &str,
) -> Result<Option<Arc<TenantRecord>>, Error> {
    Ok(match uuid::Uuid::parse_str(key) {
        Ok(id) => catalog.by_id(&id.hyphenated().to_string())?,
        Err(_) => catalog.by_slug(key)?,
    })
}

/// A numeric path parameter; anything else names nothing.
pub(super) fn id_param(params: &Params, name: &str) -> Result<i64, Error> {
    params
        .get(name)
        .and_then(|v| v.parse().ok())
        .ok_or(Error::NotFound)
}

/// An optional numeric query parameter (empty counts as absent).
pub(super) fn query_number<T: std::str::FromStr>(
    req: &Request,
    name: &str,
) -> Result<Option<T>, Error> {
    match req.query_param(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| Error::validation(name, "must be a whole number")),
    }
}
