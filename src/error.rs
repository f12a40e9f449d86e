//! The API boundary's error type and the one place that turns it into an HTTP status and a JSON
//! body. Lower layers have their own error types; `From` conversions below decide what a client
//! may learn from them.

use std::fmt;

use crate::http::Response;

#[derive(Debug)]
pub enum Error {
    BadRequest(String),
    NotFound,
    MethodNotAllowed {
        allow: String,
    },
    /// A failure on our side: logged in full, answered with a generic message.
    Internal(String),
}

impl Error {
    fn parts(&self) -> (u16, &'static str, String) {
        match self {
            Error::BadRequest(m) => (400, "bad_request", m.clone()),
            Error::NotFound => (404, "not_found", "no such resource".into()),
            Error::MethodNotAllowed { .. } => (
                405,
                "method_not_allowed",
                "the resource does not support this method".into(),
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
        let (status, code, message) = self.parts();
        let response = Response::error(status, code, &message);
        match self {
            Error::MethodNotAllowed { allow } => response.with_header("Allow", &allow),
            _ => response,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (status, code, message) = self.parts();
        write!(f, "{status} {code}: {message}")
    }
}

impl std::error::Error for Error {}
