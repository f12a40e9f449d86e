//! Hrana 3 over HTTP, JSON encoding: the stream requests this client sends and the reading of
//! the pipeline's answer (the spec: libSQL's docs/HRANA_3_SPEC.md).

use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::{Rows, SqldError, Statement, Value};

/// A pipeline's answer: the stream's next baton (none once the server closed it), the URL the
/// stream's next request must go to (when the server names one), and one result per request.
pub(super) struct Reply {
    pub baton: Option<String>,
    pub base_url: Option<String>,
    pub results: Vec<Outcome>,
}

/// One request's result: its response, or the error the server gave for it (a SQL error).
pub(super) type Outcome = Result<Json, SqldError>;

#[derive(Deserialize)]
struct WireReply {
    baton: Option<String>,
    base_url: Option<String>,
    results: Vec<WireResult>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireResult {
    Ok { response: Json },
    Error { error: WireError },
}

#[derive(Deserialize)]
struct WireError {
    message: String,
    #[serde(default)]
    code: Option<String>,
}

impl WireError {
    fn into_error(self) -> SqldError {
        SqldError::Sql {
            message: self.message,
            code: self.code,
        }
    }
}

#[derive(Deserialize)]
struct WireRows {
    cols: Vec<WireCol>,
    rows: Vec<Vec<Json>>,
    affected_row_count: u64,
    last_insert_rowid: Option<String>,
}

#[derive(Deserialize)]
struct WireCol {
    name: Option<String>,
}

#[derive(Deserialize)]
struct WireBatch {
    step_results: Vec<Option<Json>>,
    step_errors: Vec<Option<WireError>>,
}

impl Reply {
    /// Reads the body of a 200 answer to a pipeline of `count` requests.
    pub fn parse(body: &str, count: usize) -> Result<Reply, SqldError> {
        let wire: WireReply = serde_json::from_str(body).map_err(|e| {
            SqldError::Protocol(format!(
                "pipeline answer: {e}: {}",
                super::error::excerpt(body)
            ))
        })?;
        if wire.results.len() != count {
            return Err(SqldError::Protocol(format!(
                "{} results for {count} requests",
                wire.results.len()
            )));
        }
        if let Some(url) = &wire.base_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(SqldError::Protocol(format!(
                    "base_url is not http(s): {url}"
                )));
            }
        }
        Ok(Reply {
            baton: wire.baton,
            base_url: wire.base_url.map(|u| u.trim_end_matches('/').to_string()),
            results: wire
                .results
                .into_iter()
                .map(|r| match r {
                    WireResult::Ok { response } => Ok(response),
                    WireResult::Error { error } => Err(error.into_error()),
                })
                .collect(),
        })
    }
}

/// The message of an error answer: Hrana's `{"message": ...}` when it is one, else its text.
pub(super) fn error_message(body: &str) -> String {
    serde_json::from_str::<WireError>(body)
        .map(|e| match e.code {
            Some(code) => format!("{} ({code})", e.message),
            None => e.message,
        })
        .unwrap_or_else(|_| super::error::excerpt(body.trim()))
}

/// The next request's outcome; the outer error is a result missing from the answer.
pub(super) fn next(results: &mut impl Iterator<Item = Outcome>) -> Result<Outcome, SqldError> {
    results
        .next()
        .ok_or_else(|| SqldError::Protocol("a result is missing".into()))
}

fn stmt(sql: &str, args: &[Value]) -> Result<Json, SqldError> {
    let args = args
        .iter()
        .map(Value::to_wire)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({ "sql": sql, "args": args, "want_rows": true }))
}

pub(super) fn execute(sql: &str, args: &[Value]) -> Result<Json, SqldError> {
    Ok(json!({ "type": "execute", "stmt": stmt(sql, args)? }))
}

pub(super) fn sequence(sql: &str) -> Json {
    json!({ "type": "sequence", "sql": sql })
}

pub(super) fn get_autocommit() -> Json {
    json!({ "type": "get_autocommit" })
}

pub(super) fn close() -> Json {
    json!({ "type": "close" })
}

/// The statements between `BEGIN IMMEDIATE` and `COMMIT` in one `batch` request, each run only
/// if the one before it succeeded, and a `ROLLBACK` when the `COMMIT` did not run or failed.
pub(super) fn atomic_batch(statements: &[Statement]) -> Result<Json, SqldError> {
    let mut steps = vec![json!({ "stmt": stmt("BEGIN IMMEDIATE", &[])? })];
    for (i, s) in statements.iter().enumerate() {
        steps.push(json!({
            "condition": { "type": "ok", "step": i },
            "stmt": stmt(&s.sql, &s.args)?,
        }));
    }
    let commit = statements.len() + 1;
    steps.push(json!({
        "condition": { "type": "ok", "step": commit - 1 },
        "stmt": stmt("COMMIT", &[])?,
    }));
    steps.push(json!({
        "condition": { "type": "not", "cond": { "type": "ok", "step": commit } },
        "stmt": stmt("ROLLBACK", &[])?,
    }));
    Ok(json!({ "type": "batch", "batch": { "steps": steps } }))
}

/// The rows of each of the `count` statements of an `atomic_batch`, or its first error.
pub(super) fn atomic_batch_rows(outcome: Outcome, count: usize) -> Result<Vec<Rows>, SqldError> {
    let response = expect(outcome, "batch")?;
    let batch: WireBatch =
        serde_json::from_value(response.get("result").cloned().unwrap_or(Json::Null))
            .map_err(|e| SqldError::Protocol(format!("batch result: {e}")))?;
    // BEGIN, the statements, COMMIT, ROLLBACK.
    let steps = count + 3;
    if batch.step_results.len() != steps || batch.step_errors.len() != steps {
        return Err(SqldError::Protocol(format!(
            "batch of {steps} steps answered with {} results and {} errors",
            batch.step_results.len(),
            batch.step_errors.len()
        )));
    }
    // The first error is the one that stopped the rest (BEGIN, a statement, or COMMIT).
    let mut errors = batch.step_errors.into_iter();
    if let Some(error) = errors.by_ref().take(count + 2).flatten().next() {
        return Err(error.into_error());
    }
    let mut results = batch.step_results.into_iter().skip(1);
    (0..count)
        .map(|i| match results.next().flatten() {
            Some(result) => stmt_rows(result),
            None => Err(SqldError::Protocol(format!(
                "batch step {} neither ran nor failed",
                i + 1
            ))),
        })
        .collect()
}

/// The response of a request of type `kind`, or the request's error.
pub(super) fn expect(outcome: Outcome, kind: &str) -> Outcome {
    let response = outcome?;
    if response.get("type").and_then(Json::as_str) == Some(kind) {
        Ok(response)
    } else {
        Err(SqldError::Protocol(format!(
            "expected a {kind} response, got {response}"
        )))
    }
}

/// The rows of an `execute` response.
pub(super) fn rows(outcome: Outcome, kind: &str) -> Result<Rows, SqldError> {
    let mut response = expect(outcome, kind)?;
    stmt_rows(
        response
            .get_mut("result")
            .map(Json::take)
            .unwrap_or(Json::Null),
    )
}

fn stmt_rows(result: Json) -> Result<Rows, SqldError> {
    let wire: WireRows = serde_json::from_value(result)
        .map_err(|e| SqldError::Protocol(format!("statement result: {e}")))?;
    let last_insert_rowid = match wire.last_insert_rowid {
        None => None,
        Some(id) => Some(id.parse().map_err(|_| {
            SqldError::Protocol(format!("last_insert_rowid is not an integer: {id}"))
        })?),
    };
    let width = wire.cols.len();
    let rows = wire
        .rows
        .iter()
        .map(|row| {
            if row.len() != width {
                return Err(SqldError::Protocol(format!(
                    "a row of {} values for {width} columns",
                    row.len()
                )));
            }
            row.iter().map(Value::from_wire).collect()
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rows {
        columns: wire
            .cols
            .into_iter()
            .map(|c| c.name.unwrap_or_default())
            .collect(),
        rows,
        affected_row_count: wire.affected_row_count,
        last_insert_rowid,
    })
}

/// The `is_autocommit` of a `get_autocommit` response.
pub(super) fn is_autocommit(outcome: Outcome) -> Result<bool, SqldError> {
    let response = expect(outcome, "get_autocommit")?;
    response
        .get("is_autocommit")
        .and_then(Json::as_bool)
        .ok_or_else(|| SqldError::Protocol(format!("get_autocommit answer: {response}")))
}
