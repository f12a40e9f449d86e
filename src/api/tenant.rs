//! `GET /api/tenant`: the tenant as its own database file knows it.

use crate::error::Error;
use crate::http::Response;

use super::{App, Member, RequestCtx};

pub(super) fn show(_app: &App, _ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    // One cached statement, one read transaction: this is the cheapest tenant route there is,
    // and the benchmark's measure of what identification and the pool cost.
    type Meta = (Option<String>, Option<String>, Option<String>, i64);
    let (id, slug, name, version): Meta = member.tenant.read(|db| -> Result<Meta, Error> {
        Ok(db.query_one(
            "SELECT (SELECT value FROM tenant_meta WHERE key = 'id'),
                    (SELECT value FROM tenant_meta WHERE key = 'slug'),
                    (SELECT value FROM tenant_meta WHERE key = 'name'),
                    (SELECT coalesce(max(version), 0) FROM schema_migrations)",
            &[],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )?)
    })?;
    Ok(Response::json(
        200,
        &serde_json::json!({
            "id": id,
            "slug": slug,
            "name": name,
            "status": member.tenant.record().status,
            "schema_version": version,
        }),
    ))
}
