//! The admin API (`--admin-listen-addr`): namespaces created, deleted and looked up. sqld
//! 0.24 has no call that lists them.

use ureq::typestate::{WithBody, WithoutBody};
use ureq::RequestBuilder;

use super::{check_namespace, read_body, Client, SqldError};

impl Client {
    /// Creates the namespace `ns`, empty. `NamespaceExists` if it already exists (so a caller
    /// that retries can tell its first attempt went through).
    pub fn create_namespace(&self, ns: &str) -> Result<(), SqldError> {
        check_namespace(ns)?;
        let url = format!("{}/v1/namespaces/{ns}/create", self.inner.admin_url);
        let request = self.inner.agent.post(&url);
        let mut response = self
            .authorized(request)
            .header("content-type", "application/json")
            .send("{}")?;
        let status = response.status().as_u16();
        let body = read_body(&mut response)?;
        match status {
            200 => Ok(()),
            400 if body.contains("already exists") => {
                Err(SqldError::NamespaceExists(ns.to_string()))
            }
            _ => Err(SqldError::http(status, &body)),
        }
    }

    /// Deletes the namespace `ns` and its database. `NamespaceMissing` if there is none.
    pub fn delete_namespace(&self, ns: &str) -> Result<(), SqldError> {
        check_namespace(ns)?;
        let url = format!("{}/v1/namespaces/{ns}", self.inner.admin_url);
        let request = self.inner.agent.delete(&url);
        let mut response = self.authorized_empty(request).call()?;
        let status = response.status().as_u16();
        let body = read_body(&mut response)?;
        match status {
            200 => Ok(()),
            404 if body.contains("doesn't exist") => {
                Err(SqldError::NamespaceMissing(ns.to_string()))
            }
            _ => Err(SqldError::http(status, &body)),
        }
    }

    /// Whether `ns` exists (read through its configuration, which only an existing namespace
    /// has).
    pub fn namespace_exists(&self, ns: &str) -> Result<bool, SqldError> {
        check_namespace(ns)?;
        let url = format!("{}/v1/namespaces/{ns}/config", self.inner.admin_url);
        let request = self.inner.agent.get(&url);
        let mut response = self.authorized_empty(request).call()?;
        let status = response.status().as_u16();
        let body = read_body(&mut response)?;
        match status {
            200 => Ok(true),
            404 if body.contains("doesn't exist") => Ok(false),
            _ => Err(SqldError::http(status, &body)),
        }
    }
}

impl Client {
    fn authorized(&self, request: RequestBuilder<WithBody>) -> RequestBuilder<WithBody> {
        match &self.inner.admin_authorization {
            Some(auth) => request.header("authorization", auth),
            None => request,
        }
    }

    fn authorized_empty(
        &self,
        request: RequestBuilder<WithoutBody>,
    ) -> RequestBuilder<WithoutBody> {
        match &self.inner.admin_authorization {
            Some(auth) => request.header("authorization", auth),
            None => request,
        }
    }
}
