//! The principal of a request: who its credentials say it is. A bearer token or the session
//! cookie is looked up by its digest in the catalog on every request, through caches that hold
//! only while the catalog is unchanged: a revoked session, a disabled user or an expired token
//! stops working on the very next request.

use std::sync::Arc;

use crate::catalog::{CatalogView, IdentityError, Session, SessionKind, SystemAdmin, User};

use super::token;

/// The session cookie's name.
pub const COOKIE: &str = "tenantd_session";

/// How the credentials came: a cookie needs the CSRF header on state-changing requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Bearer,
    Cookie,
}

#[derive(Clone, Debug)]
pub enum Principal {
    // Shared with the catalog's cache: a request copies no user or session.
    User {
        user: Arc<User>,
        session: Arc<Session>,
        via: Via,
    },
    Admin {
        admin: SystemAdmin,
        session: Arc<Session>,
        via: Via,
    },
}

impl Principal {
    pub fn session(&self) -> &Session {
        match self {
            Principal::User { session, .. } | Principal::Admin { session, .. } => session,
        }
    }
}

/// The token a request carries: `Authorization: Bearer` first, else the session cookie.
pub fn credentials<'a>(
    authorization: Option<&'a str>,
    cookie: Option<&'a str>,
) -> Option<(&'a str, Via)> {
    if let Some(value) = authorization {
        let (scheme, token) = value.trim().split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| (token.trim(), Via::Bearer));
    }
    cookie_value(cookie, COOKIE).map(|value| (value, Via::Cookie))
}

/// The value of the cookie `name` in a `Cookie` header, the first if there are several.
pub fn cookie_value<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
    header?
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim())
}

/// Looks a token up by its digest (of a well-formed token: see [`token::well_formed`]). `None`
/// for anything that does not authenticate: unknown, revoked, expired, a disabled user, or a
/// kind that is not a credential (impersonation tickets are exchanged, never presented).
pub fn authenticate(
    catalog: &CatalogView,
    digest: &token::TokenDigest,
    via: Via,
    now: i64,
) -> Result<Option<Principal>, IdentityError> {
    let Some(session) = catalog.session_by_token_hash(digest.as_str(), now)? else {
        return Ok(None);
    };
    let principal = match session.kind {
        SessionKind::Admin => {
            let Some(admin) = session
                .admin_id
                .map(|id| catalog.catalog.admin_by_id(id))
                .transpose()?
                .flatten()
            else {
                return Ok(None);
            };
            Principal::Admin {
                admin,
                session,
                via,
            }
        }
        SessionKind::Session | SessionKind::Personal => {
            let Some(user) = session
                .user_id
                .map(|id| catalog.user_by_id(id))
                .transpose()?
                .flatten()
            else {
                return Ok(None);
            };
            if user.disabled {
                return Ok(None);
            }
            Principal::User { user, session, via }
        }
        SessionKind::ImpersonationTicket => return Ok(None),
    };
    catalog.catalog.touch_session(principal.session(), now)?;
    Ok(Some(principal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_wins_over_the_cookie() {
        let cookie = Some("a=b; tenantd_session=c0ffee ; x=y");
        assert_eq!(
            credentials(Some("Bearer abc"), cookie),
            Some(("abc", Via::Bearer))
        );
        assert_eq!(credentials(None, cookie), Some(("c0ffee", Via::Cookie)));
        assert_eq!(credentials(Some("Basic abc"), cookie), None);
        assert_eq!(credentials(None, Some("other=1")), None);
        assert_eq!(credentials(None, None), None);
    }
}
