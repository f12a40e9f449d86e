//! Which tenant a request is for: from its path prefix, its `X-Tenant-*` headers, or its host.
//!
//! Works on plain strings, not HTTP types, so the rule set can be read and tested on its own. Every
//! method that names a tenant must name the same one; the catalog lookups are served from the
//! in-memory snapshot.

use std::net::IpAddr;
use std::sync::Arc;

use crate::catalog::{normalize_host, Snapshot, TenantRecord, TenantStatus};

use super::TenancyError;

/// Where identification looks.
#[derive(Clone, Debug)]
pub struct IdentifyConfig {
    /// Hosts `<slug>.<base_domain>` name tenants; the base domain itself is central.
    pub base_domain: String,
    /// Further hosts that reach the central routes.
    pub central_hosts: Vec<String>,
    /// The tenant of requests on a central host that name none (`serve --default-tenant`),
    /// except those [`stays_central`] keeps.
    pub default_tenant: Option<String>,
}

impl Default for IdentifyConfig {
    fn default() -> Self {
        IdentifyConfig {
            base_domain: "localhost".into(),
            central_hosts: Vec::new(),
            default_tenant: None,
        }
    }
}

/// What a request carries that may name a tenant.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hints<'a> {
    pub path: &'a str,
    pub tenant_id: Option<&'a str>,
    pub tenant_slug: Option<&'a str>,
    pub host: Option<&'a str>,
    /// The request is for a route that is not a tenant's (sign-in, the account, public and
    /// real-time routes): the default tenant is not given to it, so a default that is down
    /// takes no central route with it and no central action is recorded as the default's.
    pub central_route: bool,
}

/// How the tenant was named (for logs and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Path,
    Header,
    Domain,
    Subdomain,
    /// Nothing named a tenant on a central host: the configured default.
    Default,
}

#[derive(Debug)]
pub struct Identified<'a> {
    /// The tenant, or `None` for the central routes.
    pub tenant: Option<(Arc<TenantRecord>, Via)>,
    /// The path to route on: without the `/t/{slug}` prefix when there was one.
    pub path: &'a str,
}

/// The path without a `/t/{slug}` prefix, and the slug. Cheap: no lookup.
pub fn strip_path_prefix(path: &str) -> (Option<&str>, &str) {
    let Some(after) = path.strip_prefix("/t/") else {
        return (None, path);
    };
    match after.find('/') {
        Some(i) => (Some(&after[..i]), &after[i..]),
        None => (Some(after), "/"),
    }
}

/// Whether a (normalized) host is one of the central ones: none given, the base domain, a
/// configured central host, or an IP address.
pub fn is_central(config: &IdentifyConfig, host: &str) -> bool {
    host.is_empty()
        || host == config.base_domain
        || config.central_hosts.iter().any(|h| h == host)
        // An IPv6 host keeps its brackets through `normalize_host` (`[fd00::5]`).
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .parse::<IpAddr>()
            .is_ok()
}

/// The paths a central host keeps for itself when a default tenant is set: the admin API, the
/// admin portal's pages (under `/admin` then) and the inbound webhooks, which are not any one
/// tenant's. Whole segments only: `/administration` is the tenant's.
pub fn stays_central(path: &str) -> bool {
    ["/api/admin", "/admin", "/api/webhooks"]
        .iter()
        .any(|prefix| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
}

/// Identifies the tenant of a request. Errors: a method names an unknown or deleted tenant
/// (`NotFound`), two methods name different tenants (`Conflict`), the tenant is suspended.
pub fn identify<'a>(
    snapshot: &Snapshot,
    config: &IdentifyConfig,
    hints: Hints<'a>,
) -> Result<Identified<'a>, TenancyError> {
    let mut named: Option<(Arc<TenantRecord>, Via)> = None;
    let mut name = |record: Option<&Arc<TenantRecord>>, via: Via| -> Result<(), TenancyError> {
        let record = record.ok_or(TenancyError::NotFound)?;
        match &named {
            Some((first, _)) if first.id != record.id => Err(TenancyError::Conflict),
            Some(_) => Ok(()),
            None => {
                named = Some((record.clone(), via));
                Ok(())
            }
        }
    };

    let (slug, path) = strip_path_prefix(hints.path);
    if let Some(slug) = slug {
        name(snapshot.by_slug(slug), Via::Path)?;
    }
    if let Some(id) = hints.tenant_id {
        // Accept any spelling of the UUID; the catalog keeps the canonical one.
        let canonical = uuid::Uuid::parse_str(id.trim())
            .map(|u| u.hyphenated().to_string())
            .unwrap_or_default();
        name(snapshot.by_id(&canonical), Via::Header)?;
    }
    if let Some(slug) = hints.tenant_slug {
        name(snapshot.by_slug(slug.trim()), Via::Header)?;
    }
    // A request without a Host header answers as the central host does.
    let mut on_central_host = true;
    if let Some(host) = hints.host.map(normalize_host) {
        let central = is_central(config, &host);
        let label = host
            .strip_suffix(config.base_domain.as_str())
            .and_then(|h| h.strip_suffix('.'));
        match label {
            _ if central => {}
            // Under the base domain only the subdomain rule applies, so no custom domain can
            // capture another tenant's `<slug>.<base>`. One label only: `a.b.localhost` names
            // nothing.
            Some(label) if label.contains('.') => name(None, Via::Subdomain)?,
            Some(label) => name(snapshot.by_slug(label), Via::Subdomain)?,
            None => {
                if let Some(record) = snapshot.by_domain(&host) {
                    name(Some(record), Via::Domain)?;
                }
            }
        }
        // Any other host is not ours to interpret: the central routes answer it.
        on_central_host = central;
    }
    if let Some(slug) = config.default_tenant.as_deref() {
        if named.is_none() && on_central_host && !hints.central_route && !stays_central(path) {
            // A default that is gone is the operator's to fix, never a reason to serve another.
            match snapshot.by_slug(slug) {
                Some(record) if record.status != TenantStatus::Deleted => {
                    named = Some((record.clone(), Via::Default));
                }
                _ => {
                    return Err(TenancyError::DefaultMissing {
                        tenant: slug.to_string(),
                    })
                }
            }
        }
    }

    if let Some((record, _)) = &named {
        match record.status {
            TenantStatus::Active => {}
            TenantStatus::Suspended => {
                return Err(TenancyError::Suspended {
                    tenant: record.slug.clone(),
                })
            }
            TenantStatus::Deleted => return Err(TenancyError::NotFound),
            TenantStatus::Provisioning => {
                return Err(TenancyError::Provisioning {
                    tenant: record.slug.clone(),
                })
            }
        }
    }
    Ok(Identified {
        tenant: named,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_prefix_is_stripped() {
        assert_eq!(strip_path_prefix("/t/acme/api/x"), (Some("acme"), "/api/x"));
        assert_eq!(strip_path_prefix("/t/acme"), (Some("acme"), "/"));
        assert_eq!(strip_path_prefix("/t/"), (Some(""), "/"));
        assert_eq!(strip_path_prefix("/api/t/x"), (None, "/api/t/x"));
    }

    #[test]
    fn ip_hosts_are_central_with_or_without_a_port() {
        let config = IdentifyConfig::default();
        for host in [
            "127.0.0.1:8080",
            "10.0.0.5",
            "[fd00::5]:8080",
            "[::1]",
            "localhost",
        ] {
            assert!(is_central(&config, &normalize_host(host)), "{host}");
        }
        for host in ["acme.localhost", "shop.example.com", "[not-an-ip]"] {
            assert!(!is_central(&config, &normalize_host(host)), "{host}");
        }
    }

    #[test]
    fn the_admin_paths_and_inbound_webhooks_stay_central_by_whole_segments() {
        for central in [
            "/api/admin",
            "/api/admin/tenants",
            "/admin",
            "/admin/",
            "/admin/jobs/7",
            "/api/webhooks/billing",
        ] {
            assert!(stays_central(central), "{central}");
        }
        for tenant in [
            "/",
            "/api/tenant",
            "/api/administer",
            "/administration",
            "/api/webhook-endpoints",
            "/api/webhooks-x",
            "/chats/1",
        ] {
            assert!(!stays_central(tenant), "{tenant}");
        }
    }
}
