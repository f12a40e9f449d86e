//! The session cookie and CSRF: starting a browser session (its token answered once, with a
//! cookie), and the check that a cookie-authenticated change echoes the session's CSRF token.

use serde_json::Value;

use crate::auth::principal::{self, Via};
use crate::auth::token;
use crate::catalog::Session;
use crate::error::Error;
use crate::http::{Request, Response};

use super::App;

impl App {
    /// Starts a session: stores the token's digest, and answers the token once with a cookie.
    /// `new` makes the session of the given kind from the browser's part.
    pub fn start_session(
        &self,
        new: impl FnOnce(crate::catalog::Browser) -> crate::catalog::NewSession,
        body: Value,
    ) -> Result<Response, Error> {
        let token = token::generate();
        let csrf = token::generate();
        let now = self.sessions.clock.now();
        let expires_at = now + self.sessions.lifetime_secs;
        let new = new(crate::catalog::Browser {
            token_hash: token::digest(&token).to_string(),
            csrf_token: Some(csrf.clone()),
            expires_at,
            idle_timeout_secs: Some(self.sessions.idle_secs),
        });
        self.catalog.create_session(&new, now)?;
        let mut body = body;
        body["token"] = Value::String(token.clone());
        body["csrf_token"] = Value::String(csrf);
        body["expires_at"] = Value::from(expires_at);
        let cookie = format!(
            "{}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}{}",
            principal::COOKIE,
            self.sessions.lifetime_secs,
            if self.sessions.secure_cookie {
                "; Secure"
            } else {
                ""
            }
        );
        Ok(Response::json(200, &body).with_header("Set-Cookie", cookie))
    }
}

/// A cookie-authenticated request that changes state must echo the session's CSRF token: a page on
/// another site can make the browser send the cookie, but cannot read the token.
pub(super) fn check_csrf(req: &Request, via: Via, session: &Session) -> Result<(), Error> {
    let safe = matches!(req.method.as_str(), "GET" | "HEAD" | "OPTIONS");
    if safe || via == Via::Bearer {
        return Ok(());
    }
    let expected = session.csrf_token.as_deref().unwrap_or_default();
    let given = req.header("x-csrf-token").unwrap_or_default();
    if !expected.is_empty() && token::constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        Ok(())
    } else {
        Err(Error::CsrfFailed)
    }
}
