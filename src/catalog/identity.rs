//! Who may sign in: users and system admins in the catalog, the rules for their fields, and
//! `IdentityError`, the error of every identity function (roles, memberships, sessions and the
//! audit log included). Password hashes are made and checked by the auth module; this module
//! only stores them, and never serialises them.

use std::sync::Arc;

use std::fmt;

use serde::Serialize;

use super::{check_email, Catalog, EmailRule, ValidationError};
use crate::args;
use crate::db::{self, DbError};
use crate::store::{RowRef, Sql, StoreError};

pub const MAX_PERSON_NAME_CHARS: usize = 100;
pub const MAX_PHOTO_URL_LEN: usize = 2048;
pub const MAX_PASSWORD_HASH_LEN: usize = 512;

#[derive(Debug)]
pub enum IdentityError {
    Db(DbError),
    /// A statement through the store contract.
    Store(crate::store::StoreError),
    /// Input refused; the message never echoes the input.
    Validation {
        field: &'static str,
        message: String,
    },
    EmailTaken,
    UserNotFound,
    AdminNotFound,
    TenantNotFound(String),
    RoleNotFound(String),
    RoleTaken(String),
    /// Built-in roles cannot be renamed, edited or deleted.
    RoleBuiltin(String),
    /// A role with members cannot be deleted.
    RoleInUse(String),
    NotAMember,
    AlreadyAMember,
    /// The change would leave the tenant without a member holding the built-in admin role.
    LastAdmin,
    /// One more member would pass the plan's `members` limit.
    Quota {
        limit: i64,
        usage: i64,
    },
    InvalidPermission(String),
    /// No invitation has this token (or this id, in this tenant).
    InvitationNotFound,
    InvitationExpired,
    InvitationAccepted,
    InvitationRevoked,
    /// An existing account may accept only an invitation to its own email.
    InvitationForAnotherEmail,
    /// A tenant-catalog error met on the way (reading the snapshot), kept whole.
    Catalog(super::CatalogError),
    /// A row the schema should have prevented (an unknown kind, bad JSON).
    Corrupt {
        table: &'static str,
        id: String,
        message: String,
    },
}

impl IdentityError {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> IdentityError {
        IdentityError::Validation {
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::Db(e) => write!(f, "catalog: {e}"),
            IdentityError::Store(e) => write!(f, "catalog: {e}"),
            IdentityError::Validation { field, message } => write!(f, "invalid {field}: {message}"),
            IdentityError::EmailTaken => f.write_str("this email is already registered"),
            IdentityError::UserNotFound => f.write_str("no such user"),
            IdentityError::AdminNotFound => f.write_str("no such system admin"),
            IdentityError::TenantNotFound(t) => write!(f, "no tenant {t}"),
            IdentityError::RoleNotFound(r) => write!(f, "no role {r}"),
            IdentityError::RoleTaken(r) => write!(f, "role {r} already exists"),
            IdentityError::RoleBuiltin(r) => write!(f, "role {r} is built in and cannot change"),
            IdentityError::RoleInUse(r) => write!(f, "role {r} still has members"),
            IdentityError::NotAMember => f.write_str("the user is not a member of this tenant"),
            IdentityError::AlreadyAMember => {
                f.write_str("the user is already a member of this tenant")
            }
            IdentityError::Quota { limit, usage } => {
                write!(f, "the plan allows {limit} members ({usage} now)")
            }
            IdentityError::LastAdmin => f.write_str("the tenant would be left without an admin"),
            IdentityError::InvalidPermission(p) => write!(f, "unknown permission {p:?}"),
            IdentityError::InvitationNotFound => f.write_str("no such invitation"),
            IdentityError::InvitationExpired => f.write_str("the invitation has expired"),
            IdentityError::InvitationAccepted => {
                f.write_str("the invitation has already been accepted")
            }
            IdentityError::InvitationRevoked => f.write_str("the invitation was revoked"),
            IdentityError::InvitationForAnotherEmail => {
                f.write_str("the invitation is for another email address")
            }
            IdentityError::Catalog(e) => e.fmt(f),
            IdentityError::Corrupt { table, id, message } => {
                write!(f, "catalog row {table} {id} is corrupt: {message}")
            }
        }
    }
}

impl std::error::Error for IdentityError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IdentityError::Db(e) => Some(e),
            IdentityError::Store(e) => Some(e),
            IdentityError::Catalog(e) => Some(e),
            _ => None,
        }
    }
}

impl From<super::CatalogError> for IdentityError {
    fn from(e: super::CatalogError) -> Self {
        match e {
            super::CatalogError::Db(db) => IdentityError::Db(db),
            super::CatalogError::Store(e) => IdentityError::Store(e),
            other => IdentityError::Catalog(other),
        }
    }
}

impl From<DbError> for IdentityError {
    fn from(e: DbError) -> Self {
        IdentityError::Db(e)
    }
}

impl From<crate::store::StoreError> for IdentityError {
    fn from(e: crate::store::StoreError) -> Self {
        IdentityError::Store(e)
    }
}

impl From<r2d2::Error> for IdentityError {
    fn from(e: r2d2::Error) -> Self {
        IdentityError::Db(DbError::Pool(e))
    }
}

impl From<ValidationError> for IdentityError {
    fn from(e: ValidationError) -> Self {
        IdentityError::Validation {
            field: e.field,
            message: e.message,
        }
    }
}

/// Trimmed and lower-cased, and of the shape [`EmailRule::Account`] asks for.
pub fn normalize_email(email: &str) -> Result<String, IdentityError> {
    let email = email.trim().to_lowercase();
    check_email(&email, EmailRule::Account).map_err(|m| IdentityError::invalid("email", m))?;
    Ok(email)
}

/// A trimmed person's name: `min_chars` to 100 characters, no control characters.
fn person_name(
    field: &'static str,
    value: &str,
    min_chars: usize,
) -> Result<String, IdentityError> {
    let value = value.trim();
    let chars = value.chars().count();
    if chars < min_chars || chars > MAX_PERSON_NAME_CHARS {
        return Err(IdentityError::invalid(
            field,
            format!("must be {min_chars} to {MAX_PERSON_NAME_CHARS} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(IdentityError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.to_string())
}

/// `None` for empty input (no photo); otherwise an absolute http(s) URL of at most 2048 bytes
/// with no whitespace, control characters, quotes or angle brackets.
pub fn normalize_photo_url(url: Option<&str>) -> Result<Option<String>, IdentityError> {
    let err = |m: &str| Err(IdentityError::invalid("photo_url", m));
    let url = match url.map(str::trim) {
        None | Some("") => return Ok(None),
        Some(url) => url,
    };
    if url.len() > MAX_PHOTO_URL_LEN {
        return err("must be at most 2048 characters");
    }
    let lower = url.to_ascii_lowercase();
    let rest = match lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    {
        Some(rest) => rest,
        None => return err("must be an http or https URL"),
    };
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if host_end == 0 {
        return err("must name a host");
    }
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>' | '\\'))
    {
        return err("must not contain spaces, quotes, angle brackets or backslashes");
    }
    Ok(Some(url.to_string()))
}

/// A guard, not a parser: the auth module makes the PHC string. Refusing anything that does not
/// start with `$` keeps a plain password from ever being stored by mistake.
fn password_hash(hash: &str) -> Result<&str, IdentityError> {
    let ok = hash.starts_with('$')
        && hash.len() <= MAX_PASSWORD_HASH_LEN
        && hash.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(hash)
    } else {
        Err(IdentityError::invalid(
            "password_hash",
            "must be a PHC string ($alg$...)",
        ))
    }
}

/// The unique index is the final word on emails; this maps its violation to `EmailTaken`.
/// Either backend's message names the column (`UNIQUE constraint failed: users.email`).
fn email_violation(e: StoreError) -> IdentityError {
    if e.is_constraint() && e.message().contains(".email") {
        return IdentityError::EmailTaken;
    }
    IdentityError::from(e)
}

#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: i64,
    /// Lower-cased.
    pub email: String,
    pub name: String,
    pub surname: String,
    pub photo_url: Option<String>,
    #[serde(skip_serializing)]
    pub password_hash: String,
    pub disabled: bool,
    /// RFC 3339 UTC.
    pub created_at: String,
    pub updated_at: String,
}

/// Leaves the hash out, so that logging a user never logs it.
impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Default)]
pub struct NewUser {
    pub email: String,
    pub name: String,
    /// May be empty.
    pub surname: String,
    pub photo_url: Option<String>,
    pub password_hash: String,
}

/// Fields left `None` keep their value. `photo_url: Some("")` removes the photo.
#[derive(Clone, Debug, Default)]
pub struct ProfileUpdate {
    pub name: Option<String>,
    pub surname: Option<String>,
    pub photo_url: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct SystemAdmin {
    pub id: i64,
    pub email: String,
    #[serde(skip_serializing)]
    pub password_hash: String,
    /// The shared TOTP secret as the auth module stored it.
    #[serde(skip_serializing)]
    pub totp_secret: Option<String>,
    pub totp_enabled: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl fmt::Debug for SystemAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemAdmin")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("totp_enabled", &self.totp_enabled)
            .finish_non_exhaustive()
    }
}

const USER_COLUMNS: &str =
    "id, email, name, surname, photo_url, password_hash, disabled, created_at, updated_at";

fn user_from_row(row: &dyn RowRef) -> Result<User, StoreError> {
    Ok(User {
        id: row.get(0)?,
        email: row.get(1)?,
        name: row.get(2)?,
        surname: row.get(3)?,
        photo_url: row.get(4)?,
        password_hash: row.get(5)?,
        disabled: row.get(6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
    })
}

const ADMIN_COLUMNS: &str =
    "id, email, password_hash, totp_secret, totp_enabled, created_at, updated_at";

fn admin_from_row(row: &dyn RowRef) -> Result<SystemAdmin, StoreError> {
    Ok(SystemAdmin {
        id: row.get(0)?,
        email: row.get(1)?,
        password_hash: row.get(2)?,
        totp_secret: row.get(3)?,
        totp_enabled: row.get(4)?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
    })
}

pub(crate) fn user_exists(db: &dyn Sql, id: i64) -> Result<bool, StoreError> {
    db.query_one(
        "SELECT EXISTS (SELECT 1 FROM users WHERE id = ?1)",
        args![id],
        |row| row.get(0),
    )
}

pub(crate) fn admin_exists(db: &dyn Sql, id: i64) -> Result<bool, StoreError> {
    db.query_one(
        "SELECT EXISTS (SELECT 1 FROM system_admins WHERE id = ?1)",
        args![id],
        |row| row.get(0),
    )
}

pub(super) fn load_user(db: &dyn Sql, id: i64) -> Result<Option<User>, IdentityError> {
    Ok(db.query_row(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
        args![id],
        user_from_row,
    )?)
}

fn load_admin(db: &dyn Sql, id: i64) -> Result<Option<SystemAdmin>, IdentityError> {
    Ok(db.query_row(
        &format!("SELECT {ADMIN_COLUMNS} FROM system_admins WHERE id = ?1"),
        args![id],
        admin_from_row,
    )?)
}

/// A new user's fields, validated and normalised (outside any transaction).
pub(super) fn checked_user(new: &NewUser) -> Result<NewUser, IdentityError> {
    Ok(NewUser {
        email: normalize_email(&new.email)?,
        name: person_name("name", &new.name, 1)?,
        surname: person_name("surname", &new.surname, 0)?,
        photo_url: normalize_photo_url(new.photo_url.as_deref())?,
        password_hash: password_hash(&new.password_hash)?.to_string(),
    })
}

/// Inserts a user [`checked_user`] made, in the caller's transaction.
pub(super) fn insert_user(db: &dyn Sql, new: &NewUser) -> Result<User, IdentityError> {
    let taken: bool = db.query_one(
        "SELECT EXISTS (SELECT 1 FROM users WHERE email = ?1)",
        args![&new.email],
        |row| row.get(0),
    )?;
    if taken {
        return Err(IdentityError::EmailTaken);
    }
    db.query_one(
        &format!(
            "INSERT INTO users (email, name, surname, photo_url, password_hash, disabled,
                                created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?6)
             RETURNING {USER_COLUMNS}"
        ),
        args![
            &new.email,
            &new.name,
            &new.surname,
            new.photo_url.as_deref(),
            &new.password_hash,
            db::now_rfc3339()
        ],
        user_from_row,
    )
    .map_err(email_violation)
}

impl Catalog {
    pub fn create_user(&self, new: &NewUser) -> Result<User, IdentityError> {
        let new = checked_user(new)?;
        self.write_sql(|db| insert_user(db, &new))
    }

    pub fn user_by_id(&self, id: i64) -> Result<Option<Arc<User>>, IdentityError> {
        self.snapshot()?;
        self.cached_user(id)
    }

    /// Shared with the cache, not copied: this runs on every authenticated request.
    pub(crate) fn cached_user(&self, id: i64) -> Result<Option<Arc<User>>, IdentityError> {
        self.cached(
            |c| &mut c.users,
            &id,
            || self.read(|db| Ok(load_user(db, id)?.map(Arc::new))),
        )
    }

    /// Any case and surrounding spaces; an input that is not an email finds nobody.
    pub fn user_by_email(&self, email: &str) -> Result<Option<User>, IdentityError> {
        let Ok(email) = normalize_email(email) else {
            return Ok(None);
        };
        self.read(|db| {
            Ok(db.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE email = ?1"),
                args![email],
                user_from_row,
            )?)
        })
    }

    pub fn update_profile(&self, id: i64, update: &ProfileUpdate) -> Result<User, IdentityError> {
        let name = match &update.name {
            Some(name) => Some(person_name("name", name, 1)?),
            None => None,
        };
        let surname = match &update.surname {
            Some(surname) => Some(person_name("surname", surname, 0)?),
            None => None,
        };
        let photo = match &update.photo_url {
            Some(url) => Some(normalize_photo_url(Some(url))?),
            None => None,
        };
        self.write_sql(|db| {
            let changed = db.execute(
                "UPDATE users SET
                     name = COALESCE(?2, name),
                     surname = COALESCE(?3, surname),
                     photo_url = CASE WHEN ?4 THEN ?5 ELSE photo_url END,
                     updated_at = ?6
                 WHERE id = ?1",
                args![
                    id,
                    name,
                    surname,
                    photo.is_some(),
                    photo.flatten(),
                    db::now_rfc3339()
                ],
            )?;
            if changed.rows == 0 {
                return Err(IdentityError::UserNotFound);
            }
            load_user(db, id)?.ok_or(IdentityError::UserNotFound)
        })
    }

    /// Stores a new hash. Other sessions are the caller's business (`revoke_user_sessions`).
    pub fn set_password_hash(&self, id: i64, hash: &str) -> Result<(), IdentityError> {
        let hash = password_hash(hash)?;
        self.write_sql(|db| {
            let changed = db.execute(
                "UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE id = ?1",
                args![id, hash, db::now_rfc3339()],
            )?;
            if changed.rows == 0 {
                return Err(IdentityError::UserNotFound);
            }
            Ok(())
        })
    }

    /// Disabling also revokes every session and token of the user in the same transaction, so
    /// enabling again does not bring old credentials back. (Session lookups ignore disabled
    /// users' sessions anyway.)
    pub fn set_disabled(&self, id: i64, disabled: bool) -> Result<(), IdentityError> {
        self.write_sql(|db| {
            let changed = db.execute(
                "UPDATE users SET disabled = ?2, updated_at = ?3 WHERE id = ?1",
                args![id, disabled, db::now_rfc3339()],
            )?;
            if changed.rows == 0 {
                return Err(IdentityError::UserNotFound);
            }
            if disabled {
                db.execute(
                    "UPDATE sessions SET revoked_at = ?2
                     WHERE user_id = ?1 AND revoked_at IS NULL",
                    args![id, super::sessions::unix_now()],
                )?;
            }
            Ok(())
        })
    }

    pub fn create_admin(&self, email: &str, hash: &str) -> Result<SystemAdmin, IdentityError> {
        let email = normalize_email(email)?;
        let hash = password_hash(hash)?;
        self.write_sql(|db| {
            let taken: bool = db.query_one(
                "SELECT EXISTS (SELECT 1 FROM system_admins WHERE email = ?1)",
                args![&email],
                |row| row.get(0),
            )?;
            if taken {
                return Err(IdentityError::EmailTaken);
            }
            let now = db::now_rfc3339();
            db.query_one(
                &format!(
                    "INSERT INTO system_admins (email, password_hash, totp_enabled,
                                                created_at, updated_at)
                     VALUES (?1, ?2, 0, ?3, ?3)
                     RETURNING {ADMIN_COLUMNS}"
                ),
                args![&email, hash, now],
                admin_from_row,
            )
            .map_err(email_violation)
        })
    }

    pub fn admin_by_id(&self, id: i64) -> Result<Option<SystemAdmin>, IdentityError> {
        self.read(|db| load_admin(db, id))
    }

    pub fn admin_by_email(&self, email: &str) -> Result<Option<SystemAdmin>, IdentityError> {
        let Ok(email) = normalize_email(email) else {
            return Ok(None);
        };
        self.read(|db| {
            Ok(db.query_row(
                &format!("SELECT {ADMIN_COLUMNS} FROM system_admins WHERE email = ?1"),
                args![email],
                admin_from_row,
            )?)
        })
    }

    pub fn set_admin_password_hash(&self, id: i64, hash: &str) -> Result<(), IdentityError> {
        let hash = password_hash(hash)?;
        self.write_sql(|db| {
            let changed = db.execute(
                "UPDATE system_admins SET password_hash = ?2, updated_at = ?3 WHERE id = ?1",
                args![id, hash, db::now_rfc3339()],
            )?;
            if changed.rows == 0 {
                return Err(IdentityError::AdminNotFound);
            }
            Ok(())
        })
    }

    /// Sets or clears the TOTP secret (stored as given) and whether it is required. Enabling
    /// without a secret is refused.
    pub fn set_admin_totp(
        &self,
        id: i64,
        secret: Option<&str>,
        enabled: bool,
    ) -> Result<(), IdentityError> {
        if let Some(secret) = secret {
            if secret.is_empty()
                || secret.len() > 256
                || !secret.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(IdentityError::invalid(
                    "totp_secret",
                    "must be 1 to 256 printable ASCII characters",
                ));
            }
        } else if enabled {
            return Err(IdentityError::invalid(
                "totp_secret",
                "is required to enable TOTP",
            ));
        }
        self.write_sql(|db| {
            let changed = db.execute(
                "UPDATE system_admins SET totp_secret = ?2, totp_enabled = ?3, updated_at = ?4
                 WHERE id = ?1",
                args![id, secret, enabled, db::now_rfc3339()],
            )?;
            if changed.rows == 0 {
                return Err(IdentityError::AdminNotFound);
            }
            Ok(())
        })
    }

    pub fn admin_count(&self) -> Result<u64, IdentityError> {
        let n: i64 = self.read(|db| {
            Ok::<_, IdentityError>(db.query_one(
                "SELECT count(*) FROM system_admins",
                &[],
                |row| row.get(0),
            )?)
        })?;
        Ok(n.max(0) as u64)
    }
}

#[cfg(test)]
mod conversion_tests {
    use super::super::CatalogError;
    use super::{email_violation, IdentityError};
    use crate::args;
    use crate::store::Sql;
    use crate::test_kit::{Setup, HASH};

    /// The unique index's refusal, as the store contract reports it, is `EmailTaken`; any
    /// other constraint's stays a database error.
    #[test]
    fn only_the_email_index_refusing_a_user_is_email_taken() {
        let setup = Setup::new();
        let conn = setup.outside();
        let db: &dyn Sql = &conn;
        let insert = |email: &str, name: Option<&str>| {
            db.execute(
                "INSERT INTO users (email, name, surname, password_hash, created_at, updated_at)
                 VALUES (?1, ?2, '', ?3, 'now', 'now')",
                args![email, name, HASH],
            )
        };
        insert("ann@example.test", Some("Ann")).unwrap();
        let taken = email_violation(insert("ann@example.test", Some("Ann")).unwrap_err());
        assert!(matches!(taken, IdentityError::EmailTaken), "{taken:?}");
        let other = email_violation(insert("bob@example.test", None).unwrap_err());
        assert!(matches!(other, IdentityError::Store(_)), "{other:?}");
    }

    #[test]
    fn a_tenant_catalog_error_keeps_its_kind_as_an_identity_error() {
        let not_found = IdentityError::from(CatalogError::NotFound("acme".into()));
        assert!(
            matches!(&not_found, IdentityError::Catalog(CatalogError::NotFound(t)) if t == "acme"),
            "{not_found:?}"
        );
        let taken = IdentityError::from(CatalogError::SlugTaken("acme".into()));
        assert!(
            matches!(&taken, IdentityError::Catalog(CatalogError::SlugTaken(s)) if s == "acme"),
            "{taken:?}"
        );
        assert_eq!(taken.to_string(), "slug acme is already taken");
    }
}
