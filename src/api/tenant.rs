//! `GET /api/tenant`: the tenant as its own database file knows it.

use rusqlite::OptionalExtension;

use crate::db;
use crate::error::Error;
use crate::http::Response;

use super::{App, Call, Member};

pub(super) fn show(_app: &App, _call: &Call, member: &Member) -> Result<Response, Error> {
    let conn = member.tenant.conn()?;
    let mut meta = conn.prepare_cached("SELECT value FROM tenant_meta WHERE key = ?1")?;
    let mut read = |key: &str| -> Result<Option<String>, Error> {
        Ok(meta.query_row([key], |row| row.get(0)).optional()?)
    };
    let (id, slug, name) = (read("id")?, read("slug")?, read("name")?);
    let version = db::schema_version(&conn)?;
    let record = member.tenant.record();
    Ok(Response::json(
        200,
        &serde_json::json!({
            "id": id,
            "slug": slug,
            "name": name,
            "status": record.status,
            "schema_version": version,
        }),
    ))
}
