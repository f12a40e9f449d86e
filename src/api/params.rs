//! Path parameters: a numeric id, a tenant named by its id or slug.

use std::sync::Arc;

use crate::catalog::{Catalog, TenantRecord};
use crate::error::Error;
use crate::http::Params;

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
