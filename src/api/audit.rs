//! Audit entries as the API records them: built with the request's client address, user agent
//! and tenant filled in, recorded without ever failing the request.

use crate::catalog::{ActorType, AuditEntry};

use super::{App, RequestCtx};

impl App {
    /// Records an audit entry; a failure to record is logged, never fatal to the request.
    pub fn audit(&self, entry: AuditEntry) {
        if let Err(e) = self.catalog.record_audit(&entry) {
            log::error!("audit entry {} not recorded: {e}", entry.action);
        }
    }

    /// An audit entry with the request's client address and user agent filled in.
    pub fn audit_entry(&self, ctx: &RequestCtx, actor: ActorType, action: &str) -> AuditEntry {
        let mut e = AuditEntry::new(actor, action);
        e.ip = Some(ctx.req.client_ip.to_string());
        e.user_agent = ctx.req.header("user-agent").map(String::from);
        e.tenant_id = ctx.tenant.as_ref().map(|t| t.id.clone());
        e
    }
}
