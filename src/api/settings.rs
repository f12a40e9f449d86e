//! Tenant settings (locale, timezone, date format, default currency, theme colour, logo), kept
//! in the `settings` JSON of the tenant's catalog row: `GET /api/settings` for any member,
//! `PATCH` for `settings_manage`, the same pair for system admins under
//! `/api/admin/tenants/{tenant}/settings`, and the logo at `GET /api/settings/logo`.
//!
//! Every value is validated here before it is stored, so readers (the order currency default,
//! the UI) can trust what they find; a key the row holds that fails today's rules is read as
//! unset rather than passed on. These are plain `Tenant` routes, never `TenantRead`: their
//! answers come from the catalog, not from the tenant's file.

use std::collections::BTreeMap;

use data_encoding::BASE64;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::catalog::{
    ActorType, AuditEntry, TenantRecord, DEFAULT_DATE_FORMAT, DEFAULT_LOCALE, DEFAULT_TIMEZONE,
};
use crate::error::Error;
use crate::http::{Response, Router};
use crate::workspace::{CURRENCIES, DEFAULT_CURRENCY};

use super::{App, Member, RequestCtx, Route, SignedInAdmin};

const PERMISSION: &str = "settings_manage";
/// The audit action of a change.
const CHANGED: &str = "tenant.settings_changed";
/// The largest logo, decoded.
pub const MAX_LOGO_BYTES: usize = 64 * 1024;
const DATE_FORMATS: &[&str] = &["iso", "dmy", "mdy"];
const LOGO_TYPES: &[(&str, &[u8])] = &[
    ("image/png", b"\x89PNG\r\n\x1a\n"),
    ("image/jpeg", b"\xff\xd8\xff"),
];
const FIELDS: &[&str] = &[
    "locale",
    "timezone",
    "date_format",
    "currency",
    "theme_color",
    "logo",
];

pub(super) fn routes(r: &mut Router<Route>) {
    r.add("GET", "/api/settings", Route::Tenant(show));
    r.add("PATCH", "/api/settings", Route::Tenant(change));
    r.add("GET", "/api/settings/logo", Route::Tenant(logo));
    r.add(
        "GET",
        "/api/admin/tenants/{tenant}/settings",
        Route::Admin(admin_show),
    );
    r.add(
        "PATCH",
        "/api/admin/tenants/{tenant}/settings",
        Route::Admin(admin_change),
    );
}

/// The tenant's default currency for new orders.
pub(super) fn default_currency(record: &TenantRecord) -> String {
    stored(record, "currency").unwrap_or_else(|| DEFAULT_CURRENCY.to_string())
}

/// A stored text setting that still passes validation.
fn stored(record: &TenantRecord, field: &str) -> Option<String> {
    let value = record.settings.get(field)?;
    validate(field, value).ok().and_then(|v| match v {
        Value::String(s) => Some(s),
        _ => None,
    })
}

/// The settings as readers see them: every field, defaults filled in, the logo as a URL
/// that changes with the image (so it may be cached).
fn view(record: &TenantRecord) -> Value {
    let logo = record
        .settings
        .get("logo")
        .filter(|l| validate_stored_logo(l).is_some())
        .and_then(|l| l.get("sha256"))
        .and_then(Value::as_str)
        .map(|sha| format!("/api/settings/logo?v={}", &sha[..16.min(sha.len())]));
    json!({
        "locale": stored(record, "locale").unwrap_or_else(|| DEFAULT_LOCALE.into()),
        "timezone": stored(record, "timezone").unwrap_or_else(|| DEFAULT_TIMEZONE.into()),
        "date_format": stored(record, "date_format").unwrap_or_else(|| DEFAULT_DATE_FORMAT.into()),
        "currency": default_currency(record),
        "theme_color": stored(record, "theme_color"),
        "logo": logo,
    })
}

/// One field's value as it will be stored, or why not.
fn validate(field: &str, value: &Value) -> Result<Value, String> {
    if field == "logo" {
        return validate_stored_logo(value)
            .map(|_| value.clone())
            .ok_or_else(|| "not a stored logo".into());
    }
    let text = value.as_str().ok_or("must be text")?;
    let ok = match field {
        "locale" => locale(text)?,
        "timezone" => {
            if text.parse::<chrono_tz::Tz>().is_err() {
                return Err("must be an IANA time zone name (e.g. Europe/London)".into());
            }
            text.to_string()
        }
        "date_format" => {
            if !DATE_FORMATS.contains(&text) {
                return Err(format!("must be one of {}", DATE_FORMATS.join(", ")));
            }
            text.to_string()
        }
        "currency" => {
            if text.len() != 3 || !text.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err("must be three upper-case letters (ISO 4217, e.g. EUR)".into());
            }
            if CURRENCIES.binary_search(&text).is_err() {
                return Err("unknown ISO 4217 currency code".into());
            }
            text.to_string()
        }
        "theme_color" => {
            let hex = text.strip_prefix('#').unwrap_or("");
            if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err("must be a colour as #rrggbb".into());
            }
            text.to_ascii_lowercase()
        }
        _ => return Err("unknown setting".into()),
    };
    Ok(Value::String(ok))
}

/// A BCP 47 language tag of the common shape, language[-Script][-REGION][-variant]*, put in
/// its canonical case (`en-gb` is stored as `en-GB`). Extensions and private use are refused:
/// nothing here would honour them.
fn locale(text: &str) -> Result<String, String> {
    let bad = || "must be a BCP 47 language tag (e.g. en-GB)".to_string();
    if text.is_empty() || text.len() > 35 {
        return Err(bad());
    }
    let mut parts = text.split('-');
    let language = parts.next().unwrap_or_default();
    if !(2..=3).contains(&language.len()) || !language.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(bad());
    }
    let mut out = vec![language.to_ascii_lowercase()];
    // 0: script may come, 1: region may come, 2: variants only.
    let mut stage = 0;
    for part in parts {
        let alpha = part.bytes().all(|b| b.is_ascii_alphabetic());
        let digits = part.bytes().all(|b| b.is_ascii_digit());
        let alnum = part.bytes().all(|b| b.is_ascii_alphanumeric());
        if stage == 0 && part.len() == 4 && alpha {
            let lower = part.to_ascii_lowercase();
            out.push(lower[..1].to_ascii_uppercase() + &lower[1..]);
            stage = 1;
        } else if stage <= 1 && ((part.len() == 2 && alpha) || (part.len() == 3 && digits)) {
            out.push(part.to_ascii_uppercase());
            stage = 2;
        } else if alnum
            && ((5..=8).contains(&part.len())
                || (part.len() == 4 && part.as_bytes()[0].is_ascii_digit()))
        {
            out.push(part.to_ascii_lowercase());
            stage = 2;
        } else {
            return Err(bad());
        }
    }
    Ok(out.join("-"))
}

/// A logo as given: a `data:` URL of a PNG or JPEG (base64), at most [`MAX_LOGO_BYTES`],
/// whose bytes are what its type says. SVG is refused: it can carry script.
fn given_logo(value: &Value) -> Result<Value, String> {
    let text = value.as_str().ok_or("must be a data: URL or null")?;
    let (head, data) = text
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(','))
        .ok_or("must be a data: URL (data:image/png;base64,...)")?;
    let content_type = head
        .strip_suffix(";base64")
        .ok_or("must be base64 (data:image/png;base64,...)")?
        .to_ascii_lowercase();
    let magic = LOGO_TYPES
        .iter()
        .find(|(t, _)| *t == content_type)
        .map(|(_, m)| *m)
        .ok_or("must be image/png or image/jpeg")?;
    if data.len() > (MAX_LOGO_BYTES / 3 + 1) * 4 {
        return Err(format!("must be at most {} kB", MAX_LOGO_BYTES / 1024));
    }
    let bytes = BASE64
        .decode(data.as_bytes())
        .map_err(|_| "the data is not valid base64")?;
    if bytes.len() > MAX_LOGO_BYTES {
        return Err(format!("must be at most {} kB", MAX_LOGO_BYTES / 1024));
    }
    if !bytes.starts_with(magic) {
        return Err(format!("the data is not a {content_type} image"));
    }
    Ok(json!({
        "type": content_type,
        "data": BASE64.encode(&bytes),
        "sha256": hex::encode(Sha256::digest(&bytes)),
    }))
}

/// The stored logo's type and bytes, if it is one we would have stored.
fn validate_stored_logo(value: &Value) -> Option<(&'static str, Vec<u8>)> {
    let content_type = value.get("type")?.as_str()?;
    let (content_type, magic) = LOGO_TYPES.iter().find(|(t, _)| *t == content_type)?;
    let bytes = BASE64
        .decode(value.get("data")?.as_str()?.as_bytes())
        .ok()?;
    (bytes.len() <= MAX_LOGO_BYTES && bytes.starts_with(magic)).then_some((content_type, bytes))
}

/// The settings after `patch`: each field given is validated (`null` resets it to its
/// default); every bad or unknown field is named in one 422. Returns the new settings and the
/// names of the fields that changed.
fn apply(record: &TenantRecord, patch: &Value) -> Result<(Value, Vec<String>), Error> {
    let patch = patch
        .as_object()
        .ok_or_else(|| Error::validation("settings", "must be a JSON object"))?;
    let mut settings: Map<String, Value> = record.settings.as_object().cloned().unwrap_or_default();
    let mut problems = BTreeMap::new();
    let mut changed = Vec::new();
    for (field, value) in patch {
        if !FIELDS.contains(&field.as_str()) {
            problems.insert(field.clone(), "unknown setting".to_string());
            continue;
        }
        let new = if value.is_null() {
            None
        } else if field == "logo" {
            match given_logo(value) {
                Ok(v) => Some(v),
                Err(m) => {
                    problems.insert(field.clone(), m);
                    continue;
                }
            }
        } else {
            match validate(field, value) {
                Ok(v) => Some(v),
                Err(m) => {
                    problems.insert(field.clone(), m);
                    continue;
                }
            }
        };
        if settings.get(field) != new.as_ref() {
            changed.push(field.clone());
        }
        match new {
            Some(v) => settings.insert(field.clone(), v),
            None => settings.remove(field),
        };
    }
    if !problems.is_empty() {
        return Err(Error::Validation(problems));
    }
    Ok((Value::Object(settings), changed))
}

fn show(app: &App, _ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let record = app.catalog.by_id(member.tenant.id())?;
    let record = record.as_deref().unwrap_or(member.tenant.record());
    Ok(Response::json(200, &view(record)))
}

fn change(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require(PERMISSION)?;
    super::plans::writable(app, member.tenant.id())?;
    let current = app
        .catalog
        .by_id(member.tenant.id())?
        .ok_or(Error::TenantNotFound)?;
    let entry = super::members::member_entry(app, ctx, member, CHANGED);
    save(app, ctx, &current, entry)
}

/// Applies the request's patch to `current`, stores and audits it (with `entry`, its actor
/// filled in) if anything changed, and answers the settings as they now are.
fn save(
    app: &App,
    ctx: &RequestCtx,
    current: &std::sync::Arc<TenantRecord>,
    mut entry: AuditEntry,
) -> Result<Response, Error> {
    let patch: Value = super::json_body(ctx.req)?;
    let (settings, changed) = apply(current, &patch)?;
    if changed.is_empty() {
        return Ok(Response::json(200, &view(current)));
    }
    let record = app.catalog.set_settings(&current.id, &settings)?;
    entry.tenant_id = Some(current.id.clone());
    entry.target_type = Some("tenant".into());
    entry.target_id = Some(current.id.clone());
    entry.details = json!({ "fields": changed });
    app.audit(entry);
    Ok(Response::json(200, &view(&record)))
}

fn logo(app: &App, _ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let record = app
        .catalog
        .by_id(member.tenant.id())?
        .ok_or(Error::TenantNotFound)?;
    let (content_type, bytes) = record
        .settings
        .get("logo")
        .and_then(validate_stored_logo)
        .ok_or(Error::NotFound)?;
    // The URL names the image's hash, so a cached copy is never stale; private: members only.
    Ok(Response::new(200, content_type, bytes)
        .with_header("Cache-Control", "private, max-age=86400")
        .with_header("Content-Disposition", "inline; filename=\"logo\""))
}

pub(super) fn admin_tenant(
    app: &App,
    ctx: &RequestCtx,
) -> Result<std::sync::Arc<TenantRecord>, Error> {
    super::tenant_by_key(&app.catalog, ctx.params.get("tenant").unwrap_or_default())?
        .ok_or(Error::TenantNotFound)
}

fn admin_show(app: &App, ctx: &RequestCtx, _signed_in: &SignedInAdmin) -> Result<Response, Error> {
    let record = admin_tenant(app, ctx)?;
    Ok(Response::json(200, &view(&record)))
}

fn admin_change(app: &App, ctx: &RequestCtx, signed_in: &SignedInAdmin) -> Result<Response, Error> {
    let current = admin_tenant(app, ctx)?;
    let mut entry = app.audit_entry(ctx, ActorType::Admin, CHANGED);
    entry.actor_id = Some(signed_in.admin.id);
    entry.actor_email = Some(signed_in.admin.email.clone());
    save(app, ctx, &current, entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_are_checked_and_put_in_canonical_case() {
        assert_eq!(locale("en-gb").unwrap(), "en-GB");
        assert_eq!(locale("zh-hant-tw").unwrap(), "zh-Hant-TW");
        assert_eq!(locale("es-419").unwrap(), "es-419");
        assert_eq!(locale("de").unwrap(), "de");
        for bad in [
            "",
            "e",
            "english",
            "en_GB",
            "en-GB-",
            "en-x-private",
            "en--GB",
            "en-GB-GB",
        ] {
            assert!(locale(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn logos_must_be_small_png_or_jpeg_and_be_what_they_say() {
        let png = format!(
            "data:image/png;base64,{}",
            BASE64.encode(b"\x89PNG\r\n\x1a\nrest")
        );
        let stored = given_logo(&json!(png)).unwrap();
        assert_eq!(validate_stored_logo(&stored).unwrap().0, "image/png");
        let svg = format!("data:image/svg+xml;base64,{}", BASE64.encode(b"<svg/>"));
        assert!(given_logo(&json!(svg)).is_err());
        let lying = format!(
            "data:image/jpeg;base64,{}",
            BASE64.encode(b"\x89PNG\r\n\x1a\n")
        );
        assert!(given_logo(&json!(lying)).is_err());
        let mut big = b"\x89PNG\r\n\x1a\n".to_vec();
        big.resize(MAX_LOGO_BYTES + 1, 0);
        let big = format!("data:image/png;base64,{}", BASE64.encode(&big));
        assert!(given_logo(&json!(big)).is_err());
        assert!(given_logo(&json!("/logo.png")).is_err());
    }
}
