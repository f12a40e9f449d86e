//! An interactive transaction on one sqld stream: the baton the server hands back with each
//! answer is the stream, and the next request must carry it (and go to the `base_url` the
//! server named, if it named one). Requests on a stream are one at a time, hence `&mut self`.
//!
//! Each request of the transaction also asks the stream whether it is still inside a
//! transaction (`get_autocommit`, in the same round trip): sqld rolls back a transaction that
//! held the write lock past its timeout while another writer waited, and a statement run
//! after that must not be mistaken for part of the transaction.

use super::{hrana, Client, Rows, SqldError, Value};

pub struct Transaction {
    client: Client,
    ns: String,
    /// The stream's current baton; `None` once it was closed or lost.
    baton: Option<String>,
    /// Where the stream's requests go: the client's URL, or the one the server named.
    base: String,
    /// Why the transaction can no longer be used, once it cannot.
    ended: Option<Ended>,
}

enum Ended {
    /// Committed or rolled back through this value.
    Finished,
    /// The server dropped the stream.
    Stream(String),
    /// The stream lives but the transaction does not.
    Transaction(String),
}

impl Transaction {
    /// Opens a stream, runs `setup` on it, then `begin` (`BEGIN IMMEDIATE`, or `BEGIN` for a
    /// read that sees one moment), in one round trip.
    pub(super) fn begin(
        client: Client,
        ns: &str,
        setup: &[&str],
        begin: &str,
    ) -> Result<Transaction, SqldError> {
        let base = client.inner.url.clone();
        let mut tx = Transaction {
            client,
            ns: ns.to_string(),
            baton: None,
            base,
            ended: None,
        };
        let mut requests = setup
            .iter()
            .map(|sql| hrana::execute(sql, &[]))
            .collect::<Result<Vec<_>, _>>()?;
        requests.push(hrana::execute(begin, &[])?);
        let reply = tx.client.pipeline(&tx.base, ns, None, requests)?;
        tx.follow(reply.baton, reply.base_url);
        // A failure leaves an open stream (and perhaps a transaction): Drop rolls back and
        // closes it.
        for outcome in reply.results {
            hrana::rows(outcome, "execute")?;
        }
        if tx.baton.is_none() {
            let message = "the server closed the stream after BEGIN".to_string();
            tx.ended = Some(Ended::Stream(message.clone()));
            return Err(SqldError::StreamEnded {
                status: None,
                message,
            });
        }
        Ok(tx)
    }

    /// The namespace the transaction writes.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// One statement inside the transaction. A SQL error leaves the transaction open (as in
    /// SQLite, the statement alone failed); the caller commits or rolls back.
    pub fn execute(&mut self, sql: &str, args: &[Value]) -> Result<Rows, SqldError> {
        let request = hrana::execute(sql, args)?;
        let outcome = self.request(request)?;
        hrana::rows(outcome, "execute")
    }

    /// `statements` inside the transaction in one round trip (a page of a copy): their rows,
    /// or the first error. Each runs whatever the one before it did; on an error the caller
    /// rolls back (or drops) the transaction, so none of them stays.
    pub fn execute_many(
        &mut self,
        statements: &[super::Statement],
    ) -> Result<Vec<Rows>, SqldError> {
        self.usable()?;
        let mut requests = statements
            .iter()
            .map(|s| hrana::execute(&s.sql, &s.args))
            .collect::<Result<Vec<_>, _>>()?;
        requests.push(hrana::get_autocommit());
        let mut results = self.send(requests)?.into_iter();
        let mut out = Vec::with_capacity(statements.len());
        let mut first_error = None;
        for _ in statements {
            match hrana::rows(hrana::next(&mut results)?, "execute") {
                Ok(rows) => out.push(rows),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.still_open(&mut results, || {
            first_error
                .as_ref()
                .map_or_else(|| "a statement ended it".to_string(), |e| e.to_string())
        })?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Several statements separated by semicolons (a migration file) inside the transaction.
    pub fn execute_script(&mut self, sql: &str) -> Result<(), SqldError> {
        let outcome = self.request(hrana::sequence(sql))?;
        hrana::expect(outcome, "sequence").map(drop)
    }

    /// Commits and closes the stream. An error means nothing was committed.
    pub fn commit(mut self) -> Result<(), SqldError> {
        self.finish("COMMIT")
    }

    /// Rolls back and closes the stream.
    pub fn rollback(mut self) -> Result<(), SqldError> {
        self.finish("ROLLBACK")
    }

    fn finish(&mut self, sql: &str) -> Result<(), SqldError> {
        self.usable()?;
        let baton = self.baton.take();
        self.ended = Some(Ended::Finished);
        let requests = vec![hrana::execute(sql, &[])?, hrana::close()];
        let reply = self
            .client
            .pipeline(&self.base, &self.ns, baton.as_deref(), requests)?;
        let mut results = reply.results.into_iter();
        hrana::rows(hrana::next(&mut results)?, "execute").map(drop)
    }

    /// Sends `request` and `get_autocommit` on the stream; the request's outcome, unless the
    /// stream or its transaction is gone.
    /// One pipeline on the stream: its results, the stream's next baton followed; on a failure
    /// the transaction is over.
    fn send(&mut self, requests: Vec<serde_json::Value>) -> Result<Vec<hrana::Outcome>, SqldError> {
        let reply =
            match self
                .client
                .pipeline(&self.base, &self.ns, self.baton.as_deref(), requests)
            {
                Ok(reply) => reply,
                Err(e) => {
                    // The baton may still be good if the request never arrived: Drop tries it.
                    if !matches!(e, SqldError::Transport(_)) {
                        self.baton = None;
                    }
                    self.ended = Some(Ended::Stream(e.to_string()));
                    return Err(e);
                }
            };
        self.follow(reply.baton, reply.base_url);
        Ok(reply.results)
    }

    fn request(&mut self, request: serde_json::Value) -> Result<hrana::Outcome, SqldError> {
        self.usable()?;
        let requests = vec![request, hrana::get_autocommit()];
        let mut results = self.send(requests)?.into_iter();
        let outcome = hrana::next(&mut results)?;
        self.still_open(&mut results, || match &outcome {
            Err(e) => e.to_string(),
            Ok(_) => "the statement ended it".to_string(),
        })?;
        Ok(outcome)
    }

    /// After a pipeline's statements: the stream must still be open (a baton came back) and
    /// still inside the transaction (the `get_autocommit` answer next in `results`). When it
    /// is not, the transaction is over, and `why` says what ended it.
    fn still_open(
        &mut self,
        results: &mut impl Iterator<Item = hrana::Outcome>,
        why: impl FnOnce() -> String,
    ) -> Result<(), SqldError> {
        if self.baton.is_none() {
            let message = "the server closed the stream".to_string();
            self.ended = Some(Ended::Stream(message.clone()));
            return Err(SqldError::StreamEnded {
                status: None,
                message,
            });
        }
        if hrana::is_autocommit(hrana::next(results)?)? {
            let message = why();
            self.ended = Some(Ended::Transaction(message.clone()));
            return Err(SqldError::TransactionEnded(message));
        }
        Ok(())
    }

    fn follow(&mut self, baton: Option<String>, base_url: Option<String>) {
        self.baton = baton;
        if let Some(url) = base_url {
            self.base = url;
        }
    }

    fn usable(&self) -> Result<(), SqldError> {
        match &self.ended {
            None => Ok(()),
            Some(Ended::Finished) => Err(SqldError::TransactionEnded(
                "already committed or rolled back".into(),
            )),
            Some(Ended::Stream(m)) => Err(SqldError::StreamEnded {
                status: None,
                message: m.clone(),
            }),
            Some(Ended::Transaction(m)) => Err(SqldError::TransactionEnded(m.clone())),
        }
    }
}

impl Drop for Transaction {
    /// Neither committed nor rolled back: roll back and close the stream, best effort (if the
    /// server is unreachable, it drops the stream and its transaction after its idle timeout).
    fn drop(&mut self) {
        if matches!(self.ended, Some(Ended::Finished)) {
            return;
        }
        let Some(baton) = self.baton.take() else {
            return;
        };
        let Ok(rollback) = hrana::execute("ROLLBACK", &[]) else {
            return;
        };
        let _ = self.client.pipeline(
            &self.base,
            &self.ns,
            Some(&baton),
            vec![rollback, hrana::close()],
        );
    }
}
