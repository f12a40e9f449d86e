//! The API boundary's error type and the one place that turns it into an HTTP status and a JSON
//! body. Lower layers have their own error types; the `From` conversions below decide what a
//! client may learn from them: internal details are logged, never sent.

use std::collections::BTreeMap;
use std::fmt;

use crate::catalog::{CatalogError, IdentityError};
use crate::db::DbError;
use crate::http::{self, Response};
use crate::tenancy::backup::BackupError;
use crate::tenancy::lifecycle::LifecycleError;
use crate::tenancy::TenancyError;
use crate::workspace::WorkspaceError;

#[derive(Debug)]
pub enum Error {
    BadRequest(String),
    InvalidJson(String),
    UnsupportedMediaType(String),
    Unauthorized,
    /// A login with a wrong email or password: one answer for both.
    InvalidCredentials,
    /// A system admin with two-factor authentication logged in without a code.
    TotpRequired,
    /// Cookie-authenticated, state-changing, without the session's X-CSRF-Token.
    CsrfFailed,
    /// Authenticated, but not a member of the tenant the request is for.
    NotAMember,
    /// A member without the permission the route needs.
    Forbidden(String),
    /// Refused for a reason other than a missing permission: the message says which.
    Refused(&'static str),
    /// Needs the person's own signed-in session: not a personal token, not an impersonation.
    SessionRequired(&'static str),
    /// A body over a limit of the route's own (the events API's data size).
    PayloadTooLarge(String),
    /// A streamed body the client sent wrong: too large, malformed, too slow, cut short.
    Body(http::Reject),
    /// Throttled, or the password hashing pool is full.
    TooManyRequests {
        retry_after_secs: u64,
    },
    /// Over a tenant's or a member's request rate (`api::rate_limit`).
    RateLimited {
        retry_after_secs: u64,
    },
    /// The tenant, or the whole server, is down for maintenance.
    Maintenance {
        retry_after: Option<u32>,
    },
    NotFound,
    MethodNotAllowed {
        allow: String,
    },
    /// A tenant route reached without a tenant.
    NoTenant,
    /// A central route reached on a tenant.
    CentralOnly,
    TenantNotFound,
    TenantSuspended,
    TenantConflict,
    /// Created asynchronously, its provisioning job not done yet.
    TenantProvisioning,
    /// The tenant's database cannot be used now (missing, corrupt, failed migration).
    TenantUnavailable,
    /// Being restored from a backup: refused until the restore ends.
    TenantRestoring,
    /// A write that reached the old copy of a tenant just moved to another store
    /// (`tenancy::moves`): nothing was written; the same request again reaches the new copy.
    TenantMoved,
    /// The server's default tenant (`serve --default-tenant`) is not in the catalog.
    DefaultTenantMissing(String),
    /// The real-time hub did not take the command in time: a passing overload.
    RealtimeBusy,
    /// The catalog, kept on sqld, could not be reached or was busy past the wait.
    CatalogUnavailable,
    /// The request is well formed but its values are not acceptable: field -> message.
    Validation(BTreeMap<String, String>),
    /// The request conflicts with the current state (a taken slug, a purge before delete...).
    Conflict {
        code: &'static str,
        message: String,
    },
    /// An invitation token or id that names no invitation (404), or one that can no longer be
    /// used (410): the code says which.
    Invitation {
        status: u16,
        code: &'static str,
        message: String,
    },
    /// An inbound webhook whose signature or timestamp does not hold: the code says which.
    WebhookUnverified {
        code: &'static str,
        message: String,
    },
    /// An inbound webhook for a source we do not take.
    UnknownWebhookSource,
    /// A write that would pass a limit of the tenant's plan; reads still work.
    QuotaExceeded {
        limit_name: &'static str,
        limit: i64,
        usage: i64,
    },
    /// A route of a feature the tenant's plan switches off.
    FeatureNotInPlan(&'static str),
    /// A trial that ended, or a subscription canceled or past due beyond the grace period:
    /// the tenant is read-only until it is paid for; nothing is deleted.
    SubscriptionInactive,
    /// A failure on our side: logged in full, answered with a generic message.
    Internal(String),
}

impl Error {
    pub fn validation(field: &str, message: impl Into<String>) -> Error {
        Error::Validation(BTreeMap::from([(field.to_string(), message.into())]))
    }

    fn status_code_message(&self) -> (u16, &'static str, String) {
        match self {
            Error::BadRequest(m) => (400, "bad_request", m.clone()),
            Error::InvalidJson(m) => (400, "invalid_json", m.clone()),
            Error::UnsupportedMediaType(m) => (415, "unsupported_media_type", m.clone()),
            Error::Unauthorized => (401, "unauthorized", "missing or invalid credentials".into()),
            Error::InvalidCredentials => (
                401,
                "invalid_credentials",
                "the email or password is wrong".into(),
            ),
            Error::TotpRequired => (
                401,
                "totp_required",
                "a code from the authenticator app is required".into(),
            ),
            Error::CsrfFailed => (
                403,
                "csrf_failed",
                "a cookie-authenticated request that changes state needs the session's \
                 X-CSRF-Token header"
                    .into(),
            ),
            Error::NotAMember => (
                403,
                "not_a_member",
                "you are not a member of this tenant".into(),
            ),
            Error::Forbidden(permission) => (
                403,
                "forbidden",
                format!("this needs the {permission} permission"),
            ),
            Error::Refused(why) => (403, "forbidden", (*why).to_string()),
            Error::SessionRequired(what) => (
                403,
                "session_required",
                format!("{what} needs your own session (sign in): not a personal token, not an impersonation"),
            ),
            Error::PayloadTooLarge(m) => (413, "payload_too_large", m.clone()),
            Error::Body(reject) => (reject.status(), reject.code(), reject.message()),
            Error::TooManyRequests { .. } => (
                429,
                "too_many_requests",
                "too many attempts; try again later".into(),
            ),
            Error::RateLimited { .. } => (
                429,
                "rate_limited",
                "too many requests; try again after Retry-After seconds".into(),
            ),
            Error::Maintenance { .. } => (
                503,
                "maintenance",
                "down for maintenance; try again later".into(),
            ),
            Error::NotFound => (404, "not_found", "no such resource".into()),
            Error::MethodNotAllowed { .. } => (
                405,
                "method_not_allowed",
                "the resource does not support this method".into(),
            ),
            Error::NoTenant => (
                404,
                "tenant_required",
                "this route belongs to a tenant: use /t/{slug}/..., an X-Tenant-Slug or \
                 X-Tenant-ID header, or the tenant's host"
                    .into(),
            ),
            Error::CentralOnly => (
                404,
                "not_found",
                "this route is only served on the central host".into(),
            ),
            Error::TenantNotFound => (404, "tenant_not_found", "no such tenant".into()),
            Error::TenantSuspended => (403, "tenant_suspended", "the tenant is suspended".into()),
            Error::TenantConflict => (
                400,
                "tenant_conflict",
                "the request names two different tenants".into(),
            ),
            Error::TenantProvisioning => (
                503,
                "tenant_provisioning",
                "the tenant is still being set up; try again shortly".into(),
            ),
            Error::TenantRestoring => (
                503,
                "tenant_restoring",
                "the tenant is being restored from a backup; try again shortly".into(),
            ),
            Error::TenantMoved => (
                503,
                "tenant_moved",
                "the tenant's data has just moved; try again".into(),
            ),
            Error::DefaultTenantMissing(tenant) => (
                503,
                "default_tenant_missing",
                format!(
                    "this server's default tenant {tenant} does not exist; name a tenant \
                     (/t/<slug>/ or X-Tenant-Slug), or fix --default-tenant"
                ),
            ),
            Error::TenantUnavailable => (
                503,
                "tenant_unavailable",
                "the tenant's data cannot be reached right now".into(),
            ),
            Error::CatalogUnavailable => (
                503,
                "catalog_unavailable",
                "the server's catalog cannot be reached right now; try again".into(),
            ),
            Error::RealtimeBusy => (
                503,
                "realtime_busy",
                "the real-time hub is overloaded; try again".into(),
            ),
            Error::QuotaExceeded {
                limit_name, limit, ..
            } => (
                403,
                "quota_exceeded",
                format!("the plan allows {limit} {limit_name}; upgrade the plan to add more"),
            ),
            Error::FeatureNotInPlan(feature) => (
                403,
                "feature_not_in_plan",
                format!("the tenant's plan does not include {feature}"),
            ),
            Error::SubscriptionInactive => (
                403,
                "subscription_inactive",
                "the subscription is not active: the tenant is read-only until it is".into(),
            ),
            Error::Validation(_) => (422, "validation_failed", "some fields are not valid".into()),
            Error::Conflict { code, message } => (409, code, message.clone()),
            Error::Invitation {
                status,
                code,
                message,
            } => (*status, code, message.clone()),
            Error::WebhookUnverified { code, message } => (401, code, message.clone()),
            Error::UnknownWebhookSource => (
                404,
                "unknown_source",
                "no inbound webhooks are taken for this source".into(),
            ),
            Error::Internal(_) => (
                500,
                "internal_error",
                "the server failed to handle the request".into(),
            ),
        }
    }

    /// The one mapping from an error to a response.
    pub fn into_response(self) -> Response {
        if let Error::Internal(detail) = &self {
            log::error!("internal error: {detail}");
        }
        let (status, code, message) = self.status_code_message();
        let fields = match &self {
            Error::Validation(fields) => Some(fields),
            _ => None,
        };
        let mut body = http::error_body(code, &message, fields);
        if let Error::QuotaExceeded {
            limit_name,
            limit,
            usage,
        } = &self
        {
            let mut value: serde_json::Value =
                serde_json::from_slice(&body).expect("error_body writes JSON");
            value["error"]["limit_name"] = serde_json::json!(limit_name);
            value["error"]["limit"] = serde_json::json!(limit);
            value["error"]["usage"] = serde_json::json!(usage);
            body = value.to_string().into_bytes();
        }
        let response = Response::new(status, "application/json", body);
        match self {
            Error::MethodNotAllowed { allow } => response.with_header("Allow", allow),
            Error::Unauthorized => response.with_header("WWW-Authenticate", "Bearer"),
            Error::TooManyRequests { retry_after_secs }
            | Error::RateLimited { retry_after_secs } => {
                response.with_header("Retry-After", retry_after_secs.max(1).to_string())
            }
            Error::Maintenance {
                retry_after: Some(secs),
            } => response.with_header("Retry-After", secs.to_string()),
            Error::TenantUnavailable
            | Error::RealtimeBusy
            | Error::CatalogUnavailable
            | Error::TenantProvisioning
            | Error::TenantRestoring
            | Error::TenantMoved => response.with_header("Retry-After", "1"),
            _ => response,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (status, code, message) = self.status_code_message();
        write!(f, "{status} {code}: {message}")
    }
}

impl std::error::Error for Error {}

impl From<crate::realtime::HubError> for Error {
    fn from(e: crate::realtime::HubError) -> Self {
        match e {
            crate::realtime::HubError::Busy => Error::RealtimeBusy,
            stopped @ crate::realtime::HubError::Stopped => Error::Internal(stopped.to_string()),
        }
    }
}

impl From<TenancyError> for Error {
    fn from(e: TenancyError) -> Self {
        match e {
            TenancyError::NotFound | TenancyError::Deleted { .. } => Error::TenantNotFound,
            TenancyError::Suspended { .. } => Error::TenantSuspended,
            TenancyError::Provisioning { .. } => Error::TenantProvisioning,
            TenancyError::Conflict => Error::TenantConflict,
            TenancyError::DefaultMissing { tenant } => Error::DefaultTenantMissing(tenant),
            TenancyError::Restoring { .. } => Error::TenantRestoring,
            TenancyError::Moving { tenant } => Error::Conflict {
                code: "tenant_moving",
                message: format!("tenant {tenant} is being moved to another store; try again"),
            },
            TenancyError::Unavailable { tenant, reason } => {
                log::error!("tenant {tenant} unavailable: {reason}");
                Error::TenantUnavailable
            }
            TenancyError::InUse { tenant } => Error::Conflict {
                code: "tenant_in_use",
                message: format!("tenant {tenant} is in use; try again"),
            },
            TenancyError::Catalog(e) => Error::Internal(e.to_string()),
        }
    }
}

impl From<BackupError> for Error {
    fn from(e: BackupError) -> Self {
        match e {
            BackupError::NotFound(name) => Error::validation("backup", format!("no backup {name}")),
            BackupError::Refused(why) => Error::validation("backup", why),
            BackupError::Busy(message) => Error::Conflict {
                code: "tenant_in_use",
                message,
            },
            BackupError::Tenancy(e) => e.into(),
            BackupError::Lifecycle(e) => e.into(),
            BackupError::Db(_) | BackupError::Io { .. } => Error::Internal(e.to_string()),
        }
    }
}

impl From<LifecycleError> for Error {
    fn from(e: LifecycleError) -> Self {
        let conflict = |code, e: &LifecycleError| Error::Conflict {
            code,
            message: e.to_string(),
        };
        match &e {
            LifecycleError::Validation { field, message } => Error::validation(field, message),
            LifecycleError::SlugTaken(_) => conflict("slug_taken", &e),
            LifecycleError::DomainTaken(_) => conflict("domain_taken", &e),
            LifecycleError::NotFound(_) => Error::TenantNotFound,
            LifecycleError::DomainNotFound(_) => Error::NotFound,
            LifecycleError::NotDeleted(_) => conflict("tenant_not_deleted", &e),
            LifecycleError::WrongStatus { .. } => conflict("wrong_status", &e),
            LifecycleError::InUse(_) => conflict("tenant_in_use", &e),
            LifecycleError::Db(DbError::Missing(_)) => Error::Conflict {
                code: "tenant_file_missing",
                message: "the tenant's database file is gone; it cannot be restored".into(),
            },
            LifecycleError::Tenancy(TenancyError::Restoring { .. }) => Error::TenantRestoring,
            LifecycleError::NamespaceMissing(_) => Error::Conflict {
                code: "tenant_namespace_missing",
                message: "the tenant's namespace is gone from sqld; it cannot be restored".into(),
            },
            LifecycleError::NoSqld => Error::Internal(e.to_string()),
            LifecycleError::Tenancy(TenancyError::Moving { .. }) => conflict("tenant_moving", &e),
            LifecycleError::AlreadyThere { .. } => conflict("already_there", &e),
            // Why it failed is the operator's to know: the store's own words.
            LifecycleError::MoveFailed { .. } => conflict("move_failed", &e),
            LifecycleError::Busy { .. } => conflict("tenant_busy", &e),
            LifecycleError::Store(_) => match e {
                LifecycleError::Store(store) => store.into(),
                _ => unreachable!("matched above"),
            },
            LifecycleError::Tenancy(_)
            | LifecycleError::Catalog(_)
            | LifecycleError::Db(_)
            | LifecycleError::Io { .. } => Error::Internal(e.to_string()),
        }
    }
}

impl From<CatalogError> for Error {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Store(store) => catalog_store(store),
            e => Error::Internal(e.to_string()),
        }
    }
}

/// A catalog statement that failed: busy or out of reach (a catalog on sqld, which another
/// node may hold or the network may drop) is a passing 503; anything else is our fault.
fn catalog_store(e: crate::store::StoreError) -> Error {
    use crate::store::StoreError;
    match e {
        StoreError::Busy(_) | StoreError::Backend(_) => {
            log::error!("catalog: {e}");
            Error::CatalogUnavailable
        }
        e => Error::Internal(format!("catalog: {e}")),
    }
}

impl From<WorkspaceError> for Error {
    fn from(e: WorkspaceError) -> Self {
        match e {
            WorkspaceError::Validation(fields) => Error::Validation(fields),
            WorkspaceError::NotFound => Error::NotFound,
            WorkspaceError::Forbidden(what) => Error::Forbidden(what),
            WorkspaceError::Quota {
                limit_name,
                limit,
                usage,
            } => Error::QuotaExceeded {
                limit_name,
                limit,
                usage,
            },
            // SQLite's own errors are told apart (busy or corrupt: 503; a
            // failed constraint, our bug: 500); pool and file errors are 503.
            WorkspaceError::Db(DbError::Sqlite(e)) => e.into(),
            WorkspaceError::Db(db) => db.into(),
            WorkspaceError::Store(e) => e.into(),
        }
    }
}

/// Whether a database refused a write because the tenant was moved off it: the old copy's
/// triggers abort every write with this message (`tenancy::moves`), on either backend.
fn moved(message: &str) -> bool {
    message.contains(crate::tenancy::moves::MOVED_MESSAGE)
}

/// A statement through the store contract: told apart as SQLite's own errors are.
impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            e if moved(e.message()) => Error::TenantMoved,
            StoreError::Busy(_) | StoreError::Backend(_) => {
                log::error!("tenant database error: {e}");
                Error::TenantUnavailable
            }
            StoreError::Sql {
                code: Some(code), ..
            } if matches!(
                code & 0xff,
                rusqlite::ffi::SQLITE_BUSY
                    | rusqlite::ffi::SQLITE_LOCKED
                    | rusqlite::ffi::SQLITE_CORRUPT
                    | rusqlite::ffi::SQLITE_NOTADB
                    | rusqlite::ffi::SQLITE_FULL
                    | rusqlite::ffi::SQLITE_IOERR
                    | rusqlite::ffi::SQLITE_CANTOPEN
                    | rusqlite::ffi::SQLITE_READONLY
                    | rusqlite::ffi::SQLITE_NOMEM
            ) =>
            {
                log::error!("tenant database error: {e}");
                Error::TenantUnavailable
            }
            e => Error::Internal(format!("store: {e}")),
        }
    }
}

/// A tenant database error inside a handler: that tenant's file is at fault, not the request.
impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        // What needs a local file, asked of a tenant kept on sqld: the request cannot apply,
        // nothing is broken.
        if let DbError::NotAFile(message) = e {
            return Error::Conflict {
                code: "not_a_local_file",
                message,
            };
        }
        log::error!("tenant database error: {e}");
        Error::TenantUnavailable
    }
}

/// SQLite errors inside a handler: the database's state (busy past the timeout, corrupt, full,
/// unreadable) makes the tenant unavailable for now; anything else is our bug.
impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        if moved(&e.to_string()) {
            return Error::TenantMoved;
        }
        match e.sqlite_error_code() {
            Some(
                DatabaseBusy | DatabaseLocked | DatabaseCorrupt | NotADatabase | DiskFull
                | SystemIoFailure | CannotOpen | ReadOnly | OutOfMemory,
            ) => {
                log::error!("tenant database error: {e}");
                Error::TenantUnavailable
            }
            _ => Error::Internal(format!("sqlite: {e}")),
        }
    }
}

impl From<IdentityError> for Error {
    fn from(e: IdentityError) -> Self {
        let e = match e {
            IdentityError::Catalog(catalog) => return Error::from(catalog),
            IdentityError::Store(store) => return catalog_store(store),
            e => e,
        };
        let conflict = |code, e: &IdentityError| Error::Conflict {
            code,
            message: e.to_string(),
        };
        let invitation = |status, code, e: &IdentityError| Error::Invitation {
            status,
            code,
            message: e.to_string(),
        };
        match &e {
            IdentityError::Validation { field, message } => Error::validation(field, message),
            IdentityError::InvalidPermission(_) => Error::validation("permissions", e.to_string()),
            IdentityError::EmailTaken => conflict("email_taken", &e),
            IdentityError::RoleTaken(_) => conflict("role_taken", &e),
            IdentityError::RoleBuiltin(_) => conflict("role_builtin", &e),
            IdentityError::RoleInUse(_) => conflict("role_in_use", &e),
            IdentityError::AlreadyAMember => conflict("already_a_member", &e),
            IdentityError::LastAdmin => conflict("last_admin", &e),
            IdentityError::Quota { limit, usage } => Error::QuotaExceeded {
                limit_name: "members",
                limit: *limit,
                usage: *usage,
            },
            IdentityError::RoleNotFound(_) => Error::validation("role", "no such role"),
            IdentityError::UserNotFound | IdentityError::NotAMember => Error::NotFound,
            IdentityError::AdminNotFound => Error::NotFound,
            IdentityError::InvitationNotFound => invitation(404, "invitation_invalid", &e),
            IdentityError::InvitationExpired => invitation(410, "invitation_expired", &e),
            IdentityError::InvitationAccepted => invitation(410, "invitation_accepted", &e),
            IdentityError::InvitationRevoked => invitation(410, "invitation_revoked", &e),
            IdentityError::InvitationForAnotherEmail => {
                Error::Refused("the invitation is for another email address")
            }
            IdentityError::TenantNotFound(_) => Error::TenantNotFound,
            IdentityError::Db(_)
            | IdentityError::Store(_)
            | IdentityError::Corrupt { .. }
            | IdentityError::Catalog(_) => Error::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::HubError;

    #[test]
    fn a_busy_hub_is_503_with_retry_after_not_500() {
        let response = Error::from(HubError::Busy).into_response();
        assert_eq!(response.status, 503);
        assert_eq!(response.header("retry-after"), Some("1"));
        assert_eq!(Error::from(HubError::Stopped).into_response().status, 500);
    }

    #[test]
    fn a_tenant_being_restored_is_503_with_retry_after_and_a_refused_backup_422() {
        let restoring = TenancyError::Restoring {
            tenant: "acme".into(),
        };
        let response = Error::from(restoring).into_response();
        assert_eq!(response.status, 503);
        assert_eq!(response.header("retry-after"), Some("1"));
        assert!(String::from_utf8_lossy(body(&response)).contains("tenant_restoring"));
        let refused = BackupError::Refused("no".into());
        assert_eq!(Error::from(refused).into_response().status, 422);
        let busy = BackupError::Busy("in use".into());
        assert_eq!(Error::from(busy).into_response().status, 409);
    }

    #[test]
    fn a_write_refused_by_a_moved_tenants_old_copy_is_503_with_retry_after_on_both_backends() {
        // A local file's trigger, as rusqlite reports it.
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE t (x); CREATE TRIGGER r BEFORE INSERT ON t \
             BEGIN SELECT RAISE(ABORT, '{}'); END;",
            crate::tenancy::moves::MOVED_MESSAGE
        ))
        .unwrap();
        let refused = conn.execute("INSERT INTO t VALUES (1)", []).unwrap_err();
        let store = crate::store::StoreError::from(
            conn.execute("INSERT INTO t VALUES (1)", []).unwrap_err(),
        );
        // The same, as sqld words it.
        let sqld = crate::store::StoreError::from(crate::sqld::SqldError::Sql {
            message: crate::tenancy::moves::MOVED_MESSAGE.into(),
            code: Some("SQLITE_CONSTRAINT_TRIGGER".into()),
        });
        for error in [Error::from(refused), Error::from(store), Error::from(sqld)] {
            let response = error.into_response();
            assert_eq!(response.status, 503);
            assert_eq!(response.header("retry-after"), Some("1"));
            assert!(String::from_utf8_lossy(body(&response)).contains("tenant_moved"));
        }
        // Any other trigger's abort stays ours to fix.
        let other = crate::store::StoreError::Sql {
            code: Some(rusqlite::ffi::SQLITE_CONSTRAINT_TRIGGER),
            message: "something else".into(),
        };
        assert_eq!(Error::from(other).into_response().status, 500);
    }

    fn body(response: &Response) -> &[u8] {
        match &response.body {
            http::Body::Full(bytes) => bytes,
            _ => panic!("an error body is whole"),
        }
    }

    #[test]
    fn error_bodies_have_the_one_shape() {
        let too_large = Error::PayloadTooLarge("data over 10240 bytes".into()).into_response();
        assert_eq!(too_large.status, 413);
        assert_eq!(too_large.header("content-type"), Some("application/json"));
        assert_eq!(
            body(&too_large),
            br#"{"error":{"code":"payload_too_large","message":"data over 10240 bytes"}}"#
        );
        let invalid = Error::validation("email", "must be text").into_response();
        assert_eq!(invalid.status, 422);
        assert_eq!(
            body(&invalid),
            br#"{"error":{"code":"validation_failed","fields":{"email":"must be text"},"message":"some fields are not valid"}}"#
        );
        assert_eq!(
            body(&Response::error(403, "forbidden", "no")),
            br#"{"error":{"code":"forbidden","message":"no"}}"#
        );
    }
}
