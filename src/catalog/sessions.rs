//! Sessions and tokens in one table: browser sessions, personal access tokens, system admin
//! sessions and one-time impersonation tickets. Only the SHA-256 of a token is stored (the
//! caller hashes); times are unix seconds, since they are compared on every request. Functions
//! that decide liveness take `now` so that callers and tests share one clock.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::identity::{admin_exists, user_exists, IdentityError};
use super::{tenant_exists, Catalog};
use crate::args;
use crate::store::{RowRef, Sql, StoreError};

/// `last_used_at` is written at most this often per session, so a busy session does not cost a
/// write per request. Idle timeouts are therefore exact to within this interval (or half the
/// timeout, if that is shorter).
pub const TOUCH_INTERVAL_SECS: i64 = 60;

pub const MAX_TOKEN_NAME_CHARS: usize = 100;
const MAX_CSRF_LEN: usize = 256;

/// Now in unix seconds.
pub fn unix_now() -> i64 {
    // A clock before 1970 is a broken host; the epoch is a harmless stand-in.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// A signed-in browser (possibly an impersonation, see `impersonated_by`).
    #[default]
    Session,
    /// A named API token limited to one tenant; may never expire.
    Personal,
    /// A system admin's session.
    Admin,
    /// Short-lived, single use: exchanged through [`Catalog::consume_ticket`].
    ImpersonationTicket,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Session => "session",
            SessionKind::Personal => "personal",
            SessionKind::Admin => "admin",
            SessionKind::ImpersonationTicket => "impersonation_ticket",
        }
    }

    pub fn parse(s: &str) -> Option<SessionKind> {
        match s {
            "session" => Some(SessionKind::Session),
            "personal" => Some(SessionKind::Personal),
            "admin" => Some(SessionKind::Admin),
            "impersonation_ticket" => Some(SessionKind::ImpersonationTicket),
            _ => None,
        }
    }
}

impl fmt::Display for SessionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to store: one variant per kind, holding exactly what that kind needs, so a session
/// without its user or a token naming both a user and an admin cannot be built.
#[derive(Clone)]
pub enum NewSession {
    /// A user signed in.
    Session { user_id: i64, browser: Browser },
    /// A system admin acting as `user_id` within one tenant (an exchanged impersonation ticket).
    ImpersonatedSession {
        user_id: i64,
        tenant_id: String,
        impersonated_by: i64,
        browser: Browser,
    },
    /// A system admin signed in.
    Admin { admin_id: i64, browser: Browser },
    /// A named API token limited to one tenant (the user must be a member); `expires_at`
    /// (absolute, unix seconds) `None` never expires.
    Personal {
        token_hash: String,
        user_id: i64,
        tenant_id: String,
        name: String,
        expires_at: Option<i64>,
    },
    /// Short-lived, single use: exchanged through [`Catalog::consume_ticket`] for an
    /// `ImpersonatedSession`.
    ImpersonationTicket {
        token_hash: String,
        user_id: i64,
        tenant_id: String,
        impersonated_by: i64,
        /// Absolute, unix seconds.
        expires_at: i64,
    },
}

/// What a signed-in session holds besides whose it is.
#[derive(Clone)]
pub struct Browser {
    /// SHA-256 of the token, 64 lower-case hex digits.
    pub token_hash: String,
    pub csrf_token: Option<String>,
    /// Absolute, unix seconds.
    pub expires_at: i64,
    pub idle_timeout_secs: Option<i64>,
}

impl Browser {
    fn columns(&self, kind: SessionKind) -> Columns<'_> {
        Columns {
            kind,
            token_hash: &self.token_hash,
            user_id: None,
            admin_id: None,
            tenant_id: None,
            name: None,
            csrf_token: self.csrf_token.as_deref(),
            impersonated_by: None,
            expires_at: Some(self.expires_at),
            idle_timeout_secs: self.idle_timeout_secs,
        }
    }
}

/// A `NewSession` as the columns of its row.
struct Columns<'a> {
    kind: SessionKind,
    token_hash: &'a str,
    user_id: Option<i64>,
    admin_id: Option<i64>,
    tenant_id: Option<&'a str>,
    name: Option<&'a str>,
    csrf_token: Option<&'a str>,
    impersonated_by: Option<i64>,
    expires_at: Option<i64>,
    idle_timeout_secs: Option<i64>,
}

impl NewSession {
    fn columns(&self) -> Columns<'_> {
        match self {
            NewSession::Session { user_id, browser } => Columns {
                user_id: Some(*user_id),
                ..browser.columns(SessionKind::Session)
            },
            NewSession::ImpersonatedSession {
                user_id,
                tenant_id,
                impersonated_by,
                browser,
            } => Columns {
                user_id: Some(*user_id),
                tenant_id: Some(tenant_id),
                impersonated_by: Some(*impersonated_by),
                ..browser.columns(SessionKind::Session)
            },
            NewSession::Admin { admin_id, browser } => Columns {
                admin_id: Some(*admin_id),
                ..browser.columns(SessionKind::Admin)
            },
            NewSession::Personal {
                token_hash,
                user_id,
                tenant_id,
                name,
                expires_at,
            } => Columns {
                kind: SessionKind::Personal,
                token_hash,
                user_id: Some(*user_id),
                admin_id: None,
                tenant_id: Some(tenant_id),
                name: Some(name),
                csrf_token: None,
                impersonated_by: None,
                expires_at: *expires_at,
                idle_timeout_secs: None,
            },
            NewSession::ImpersonationTicket {
                token_hash,
                user_id,
                tenant_id,
                impersonated_by,
                expires_at,
            } => Columns {
                kind: SessionKind::ImpersonationTicket,
                token_hash,
                user_id: Some(*user_id),
                admin_id: None,
                tenant_id: Some(tenant_id),
                name: None,
                csrf_token: None,
                impersonated_by: Some(*impersonated_by),
                expires_at: Some(*expires_at),
                idle_timeout_secs: None,
            },
        }
    }
}

impl fmt::Debug for NewSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.columns();
        f.debug_struct("NewSession")
            .field("kind", &c.kind)
            .field("user_id", &c.user_id)
            .field("admin_id", &c.admin_id)
            .field("tenant_id", &c.tenant_id)
            .finish_non_exhaustive()
    }
}

/// A stored session, without its hash. Times are unix seconds.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    pub id: i64,
    pub kind: SessionKind,
    pub user_id: Option<i64>,
    pub admin_id: Option<i64>,
    pub tenant_id: Option<String>,
    pub name: Option<String>,
    pub csrf_token: Option<String>,
    pub impersonated_by: Option<i64>,
    pub created_at: i64,
    pub last_used_at: i64,
    pub expires_at: Option<i64>,
    pub idle_timeout_secs: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// Leaves the CSRF token out of logs.
impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("user_id", &self.user_id)
            .field("admin_id", &self.admin_id)
            .field("tenant_id", &self.tenant_id)
            .field("impersonated_by", &self.impersonated_by)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The same rule as the lookups' SQL (`LIVE`), minus the user's disabled flag.
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none()
            && self.expires_at.is_none_or(|at| at > now)
            && self
                .idle_timeout_secs
                .is_none_or(|idle| self.last_used_at.saturating_add(idle) > now)
    }

    fn touch_due(&self, now: i64) -> bool {
        let interval = match self.idle_timeout_secs {
            Some(idle) => TOUCH_INTERVAL_SECS.min(idle / 2),
            None => TOUCH_INTERVAL_SECS,
        };
        now.saturating_sub(self.last_used_at) >= interval.max(1)
    }
}

/// A personal access token as its owner sees it: never the hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PersonalToken {
    pub id: i64,
    pub name: String,
    pub tenant_id: String,
    pub created_at: i64,
    pub last_used_at: i64,
    pub expires_at: Option<i64>,
}

/// Unqualified: RETURNING does not accept a table alias.
const SESSION_COLUMNS: &str = "id, kind, user_id, admin_id, tenant_id, name, csrf_token,
    impersonated_by, created_at, last_used_at, expires_at, idle_timeout_secs, revoked_at";

/// Not revoked, not past its absolute or idle deadline at `?2`, and not a disabled user's.
const LIVE: &str = "s.revoked_at IS NULL
    AND (s.expires_at IS NULL OR s.expires_at > ?2)
    AND (s.idle_timeout_secs IS NULL OR s.last_used_at + s.idle_timeout_secs > ?2)
    AND (s.user_id IS NULL
         OR NOT (SELECT disabled FROM users u WHERE u.id = s.user_id))";

/// The outer error is the store's; the inner one a row the schema should have prevented.
fn session_from_row(row: &dyn RowRef) -> Result<Result<Session, IdentityError>, StoreError> {
    let id: i64 = row.get(0)?;
    let kind: String = row.get(1)?;
    let Some(kind) = SessionKind::parse(&kind) else {
        return Ok(Err(IdentityError::Corrupt {
            table: "sessions",
            id: id.to_string(),
            message: format!("unknown kind {kind:?}"),
        }));
    };
    Ok(Ok(Session {
        id,
        kind,
        user_id: row.get(2)?,
        admin_id: row.get(3)?,
        tenant_id: row.get(4)?,
        name: row.get(5)?,
        csrf_token: row.get(6)?,
        impersonated_by: row.get(7)?,
        created_at: row.get(8)?,
        last_used_at: row.get(9)?,
        expires_at: row.get(10)?,
        idle_timeout_secs: row.get(11)?,
        revoked_at: row.get(12)?,
    }))
}

fn is_token_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks the values of a new session's columns (its variant gave their shape) and returns
/// the trimmed name.
fn check_values(new: &Columns<'_>, now: i64) -> Result<Option<String>, IdentityError> {
    let invalid = |field: &'static str, message: &str| IdentityError::invalid(field, message);
    if !is_token_hash(new.token_hash) {
        return Err(invalid(
            "token_hash",
            "must be a SHA-256 in lower-case hex (64 digits)",
        ));
    }
    if new.expires_at.is_some_and(|at| at <= now) {
        return Err(invalid("expires_at", "must be in the future"));
    }
    if new.idle_timeout_secs.is_some_and(|s| s <= 0) {
        return Err(invalid("idle_timeout_secs", "must be positive"));
    }
    if let Some(csrf) = new.csrf_token {
        if csrf.is_empty()
            || csrf.len() > MAX_CSRF_LEN
            || !csrf.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(invalid(
                "csrf_token",
                "must be 1 to 256 printable ASCII characters",
            ));
        }
    }
    let Some(name) = new.name else {
        return Ok(None);
    };
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_TOKEN_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(invalid(
            "name",
            "must be 1 to 100 characters without control characters",
        ));
    }
    Ok(Some(name.to_string()))
}

/// Whoever a new session names must exist; tenant-bound user tokens need a membership.
fn check_references(db: &dyn Sql, new: &Columns<'_>) -> Result<(), IdentityError> {
    if let Some(user) = new.user_id {
        if !user_exists(db, user)? {
            return Err(IdentityError::UserNotFound);
        }
    }
    for admin in [new.admin_id, new.impersonated_by].into_iter().flatten() {
        if !admin_exists(db, admin)? {
            return Err(IdentityError::AdminNotFound);
        }
    }
    if let Some(tenant) = new.tenant_id {
        if !tenant_exists(db, tenant)? {
            return Err(IdentityError::TenantNotFound(tenant.to_string()));
        }
        if let Some(user) = new.user_id {
            let member: bool = db.query_one(
                "SELECT EXISTS (SELECT 1 FROM memberships WHERE user_id = ?1 AND tenant_id = ?2)",
                args![user, tenant],
                |row| row.get(0),
            )?;
            if !member {
                return Err(IdentityError::NotAMember);
            }
        }
    }
    Ok(())
}

impl Catalog {
    /// Stores a session or token created at `now`; returns its id.
    pub fn create_session(&self, new: &NewSession, now: i64) -> Result<i64, IdentityError> {
        let new = new.columns();
        let name = check_values(&new, now)?;
        self.write_sql(|db| {
            check_references(db, &new)?;
            Ok(db.query_one(
                "INSERT INTO sessions (token_hash, kind, user_id, admin_id, tenant_id, name,
                     csrf_token, impersonated_by, created_at, last_used_at, expires_at,
                     idle_timeout_secs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11)
                 RETURNING id",
                args![
                    new.token_hash,
                    new.kind.as_str(),
                    new.user_id,
                    new.admin_id,
                    new.tenant_id,
                    name,
                    new.csrf_token,
                    new.impersonated_by,
                    now,
                    new.expires_at,
                    new.idle_timeout_secs,
                ],
                |row| row.get(0),
            )?)
        })
    }

    /// The live session, token or admin session with this hash at `now`: revoked, expired,
    /// idle-expired and disabled users' sessions are not returned, and neither are
    /// impersonation tickets (only [`Catalog::consume_ticket`] reaches those). One indexed
    /// query.
    pub fn session_by_token_hash(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<Option<Arc<Session>>, IdentityError> {
        self.snapshot()?;
        self.cached_session(hash, now)
    }

    pub(crate) fn cached_session(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<Option<Arc<Session>>, IdentityError> {
        let found = self.cached(
            |c| &mut c.sessions,
            hash,
            || -> Result<_, IdentityError> {
                // On a miss only: a hit was checked when it was kept, and every authenticated
                // request looks its session up.
                if !is_token_hash(hash) {
                    return Ok(None);
                }
                let found = self.read(|db| {
                    db.query_row(
                        &format!(
                            "SELECT {SESSION_COLUMNS} FROM sessions s
                             WHERE s.token_hash = ?1 AND s.kind <> 'impersonation_ticket'
                               AND {LIVE}"
                        ),
                        args![hash, now],
                        session_from_row,
                    )
                    .map_err(IdentityError::from)
                })?;
                Ok(found.transpose()?.map(Arc::new))
            },
        )?;
        // Cached a while ago, perhaps: time may have ended it since.
        Ok(found.filter(|s| s.is_live(now)))
    }

    /// Whether the session with this id is still live at `now` (for checks made long after the
    /// request that authenticated, such as re-authorizing real-time subscriptions).
    pub fn session_is_live(&self, id: i64, now: i64) -> Result<bool, IdentityError> {
        let live: Option<i64> = self.read(|db| {
            Ok::<_, IdentityError>(db.query_row(
                &format!("SELECT s.id FROM sessions s WHERE s.id = ?1 AND {LIVE}"),
                args![id, now],
                |row| row.get(0),
            )?)
        })?;
        Ok(live.is_some())
    }

    /// Records use at `now`, but only when the stored `last_used_at` is older than
    /// [`TOUCH_INTERVAL_SECS`]; otherwise returns `false` without touching the database.
    /// Takes the session as looked up, which already says when it was last written.
    pub fn touch_session(&self, session: &Session, now: i64) -> Result<bool, IdentityError> {
        if !session.touch_due(now) {
            return Ok(false);
        }
        self.write_sql(|db| {
            let changed = db.execute(
                "UPDATE sessions SET last_used_at = ?2
                 WHERE id = ?1 AND revoked_at IS NULL AND last_used_at < ?2",
                args![session.id, now],
            )?;
            Ok(changed.rows > 0)
        })
    }

    /// True if it was live (not yet revoked).
    pub fn revoke_session(&self, id: i64) -> Result<bool, IdentityError> {
        self.write_sql(|db| {
            let changed = db.execute(
                "UPDATE sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                args![id, unix_now()],
            )?;
            Ok(changed.rows > 0)
        })
    }

    /// Signs the user out everywhere but `except`: browser sessions (impersonations of the user
    /// included) and pending tickets. Personal tokens stay; see
    /// [`Catalog::revoke_user_personal_tokens`]. Returns how many were revoked.
    pub fn revoke_user_sessions(
        &self,
        user_id: i64,
        except: Option<i64>,
    ) -> Result<usize, IdentityError> {
        self.write_sql(|db| {
            Ok(db
                .execute(
                    "UPDATE sessions SET revoked_at = ?3
                 WHERE user_id = ?1 AND kind IN ('session', 'impersonation_ticket')
                   AND revoked_at IS NULL AND (?2 IS NULL OR id <> ?2)",
                    args![user_id, except, unix_now()],
                )?
                .rows as usize)
        })
    }

    pub fn revoke_user_personal_tokens(&self, user_id: i64) -> Result<usize, IdentityError> {
        self.write_sql(|db| {
            Ok(db
                .execute(
                    "UPDATE sessions SET revoked_at = ?2
                 WHERE user_id = ?1 AND kind = 'personal' AND revoked_at IS NULL",
                    args![user_id, unix_now()],
                )?
                .rows as usize)
        })
    }

    /// Signs a system admin out everywhere but `except`: their own sessions, and whatever they
    /// started as someone else (impersonation sessions and pending tickets), which would
    /// otherwise outlive a reset of a compromised admin.
    pub fn revoke_admin_sessions(
        &self,
        admin_id: i64,
        except: Option<i64>,
    ) -> Result<usize, IdentityError> {
        self.write_sql(|db| {
            Ok(db
                .execute(
                    "UPDATE sessions SET revoked_at = ?3
                 WHERE ((admin_id = ?1 AND kind = 'admin') OR impersonated_by = ?1)
                   AND revoked_at IS NULL AND (?2 IS NULL OR id <> ?2)",
                    args![admin_id, except, unix_now()],
                )?
                .rows as usize)
        })
    }

    /// Exchanges a live impersonation ticket exactly once: one statement revokes it and returns
    /// it, inside the write lock, so of any number of concurrent exchanges only one gets it.
    pub fn consume_ticket(&self, hash: &str, now: i64) -> Result<Option<Session>, IdentityError> {
        if !is_token_hash(hash) {
            return Ok(None);
        }
        self.write_sql(|db| {
            db.query_row(
                &format!(
                    "UPDATE sessions AS s SET revoked_at = ?2
                     WHERE s.token_hash = ?1 AND s.kind = 'impersonation_ticket' AND {LIVE}
                     RETURNING {SESSION_COLUMNS}"
                ),
                args![hash, now],
                session_from_row,
            )?
            .transpose()
        })
    }

    /// The user's personal tokens that are not revoked (expired ones included, so that they
    /// can be seen and cleaned up), oldest first.
    pub fn personal_tokens(&self, user_id: i64) -> Result<Vec<PersonalToken>, IdentityError> {
        self.read(|db| {
            Ok(db.query_map(
                "SELECT id, name, tenant_id, created_at, last_used_at, expires_at
                 FROM sessions
                 WHERE user_id = ?1 AND kind = 'personal' AND revoked_at IS NULL
                 ORDER BY id",
                args![user_id],
                |row| {
                    Ok(PersonalToken {
                        id: row.get(0)?,
                        name: row.get(1)?,
                        tenant_id: row.get(2)?,
                        created_at: row.get(3)?,
                        last_used_at: row.get(4)?,
                        expires_at: row.get(5)?,
                    })
                },
            )?)
        })
    }

    /// Revokes one of the user's own personal tokens; false if there is no such live token of
    /// theirs (someone else's id included).
    pub fn revoke_personal_token(&self, user_id: i64, id: i64) -> Result<bool, IdentityError> {
        self.write_sql(|db| {
            let changed = db.execute(
                "UPDATE sessions SET revoked_at = ?3
                 WHERE id = ?1 AND user_id = ?2 AND kind = 'personal' AND revoked_at IS NULL",
                args![id, user_id, unix_now()],
            )?;
            Ok(changed.rows > 0)
        })
    }
}
