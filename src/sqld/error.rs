//! The one error type of the sqld client: what went wrong talking to libSQL server, sorted by
//! what a caller does about it (retry elsewhere, report the SQL, provision the namespace...).

use std::fmt;

/// How much of an unexpected answer's body an error keeps: enough to read, never a whole page.
const BODY_EXCERPT: usize = 512;

#[derive(Debug)]
pub enum SqldError {
    /// The server could not be reached or stopped answering: refused, reset, timed out, or the
    /// answer's body could not be read. Nothing says whether a write was applied.
    Transport(ureq::Error),
    /// A non-2xx answer that none of the variants below explains, with its status and body.
    Http { status: u16, body: String },
    /// SQLite (or sqld's SQL parser) refused a statement: `code` is sqld's machine-readable
    /// code (`SQLITE_CONSTRAINT`, `SQL_PARSE_ERROR`, `TRANSACTION_TIMEOUT`...), when it gave one.
    Sql {
        message: String,
        code: Option<String>,
    },
    /// An answer that does not follow the Hrana protocol as this client speaks it.
    Protocol(String),
    /// The namespace does not exist on the server (never created, or deleted).
    NamespaceMissing(String),
    /// Creating a namespace that already exists.
    NamespaceExists(String),
    /// The namespace name is not one this client sends (letters, digits, `-` and `_`, at
    /// most 64): it goes into a URL path and a header.
    BadNamespace(String),
    /// Something this client cannot send: an infinite float (Hrana's JSON has no
    /// infinities), a configured URL that is not an http(s) base.
    BadArgument(String),
    /// The server ended the stream that held an interactive transaction (expired after
    /// inactivity, baton refused, or closed by the server): its transaction is gone, rolled back.
    StreamEnded {
        status: Option<u16>,
        message: String,
    },
    /// The stream is alive but its transaction is not: sqld rolled it back (after its
    /// transaction timeout while another writer waited for the lock), or a statement ended it.
    TransactionEnded(String),
}

impl SqldError {
    pub(super) fn http(status: u16, body: &str) -> SqldError {
        SqldError::Http {
            status,
            body: excerpt(body),
        }
    }

    /// The SQLite or sqld code of a SQL error.
    pub fn sql_code(&self) -> Option<&str> {
        match self {
            SqldError::Sql { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

pub(super) fn excerpt(body: &str) -> String {
    match body.char_indices().nth(BODY_EXCERPT) {
        Some((at, _)) => format!("{}...", &body[..at]),
        None => body.to_string(),
    }
}

impl fmt::Display for SqldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqldError::Transport(e) => write!(f, "sqld unreachable: {e}"),
            SqldError::Http { status, body } => write!(f, "sqld answered {status}: {body}"),
            SqldError::Sql {
                message,
                code: Some(code),
            } => write!(f, "sqld SQL error ({code}): {message}"),
            SqldError::Sql {
                message,
                code: None,
            } => write!(f, "sqld SQL error: {message}"),
            SqldError::Protocol(m) => write!(f, "sqld protocol error: {m}"),
            SqldError::NamespaceMissing(ns) => write!(f, "sqld has no namespace {ns}"),
            SqldError::NamespaceExists(ns) => write!(f, "sqld namespace {ns} already exists"),
            SqldError::BadNamespace(ns) => write!(f, "not a namespace name: {ns:?}"),
            SqldError::BadArgument(m) => write!(f, "argument not sendable to sqld: {m}"),
            SqldError::StreamEnded {
                status: Some(status),
                message,
            } => write!(
                f,
                "sqld ended the stream ({status}: {message}); its transaction was rolled back"
            ),
            SqldError::StreamEnded {
                status: None,
                message,
            } => write!(
                f,
                "sqld ended the stream ({message}); its transaction was rolled back"
            ),
            SqldError::TransactionEnded(m) => {
                write!(f, "the transaction is no longer open on sqld: {m}")
            }
        }
    }
}

impl std::error::Error for SqldError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SqldError::Transport(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ureq::Error> for SqldError {
    fn from(e: ureq::Error) -> Self {
        SqldError::Transport(e)
    }
}
