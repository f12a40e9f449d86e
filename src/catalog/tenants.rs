//! Tenant records (status, slug, name, domains) and the writes that change them: insert, status
//! transitions, renames (slug and name), domains and deletion, each in one transaction. Reads are answered
//! from the snapshot (see `snapshot`).

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use super::{
    normalize_host, permissions, plans, validate_domain, validate_name, validate_slug, Catalog,
    CatalogError, ValidationError,
};
use crate::args;
use crate::db;
use crate::store::{Sql, StoreError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Active,
    Suspended,
    Deleted,
    /// Created asynchronously: its file is being made; not usable yet.
    Provisioning,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Deleted => "deleted",
            TenantStatus::Provisioning => "provisioning",
        }
    }

    pub fn parse(s: &str) -> Option<TenantStatus> {
        match s {
            "active" => Some(TenantStatus::Active),
            "suspended" => Some(TenantStatus::Suspended),
            "deleted" => Some(TenantStatus::Deleted),
            "provisioning" => Some(TenantStatus::Provisioning),
            _ => None,
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a tenant's database is kept (`tenants.store`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStore {
    /// `data/tenants/<uuid>.db` on this machine.
    #[default]
    Local,
    /// The libSQL server namespace named by the tenant's id.
    Sqld,
}

impl TenantStore {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStore::Local => "local",
            TenantStore::Sqld => "sqld",
        }
    }

    pub fn parse(s: &str) -> Option<TenantStore> {
        match s {
            "local" => Some(TenantStore::Local),
            "sqld" => Some(TenantStore::Sqld),
            _ => None,
        }
    }
}

impl fmt::Display for TenantStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where tenant databases may be kept on this server: where new tenants go, and the libSQL
/// server when there is one (`serve --store sqld`). Tenants already kept elsewhere stay where
/// the catalog says they are.
#[derive(Clone, Default)]
pub struct TenantStores {
    pub new_tenants: TenantStore,
    pub sqld: Option<Arc<crate::sqld::Client>>,
}

impl fmt::Debug for TenantStores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantStores")
            .field("new_tenants", &self.new_tenants)
            .field("sqld", &self.sqld.is_some())
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DomainRecord {
    pub domain: String,
    pub is_primary: bool,
}

/// The settings a tenant has until it sets its own (the API shows them, exports follow them).
pub const DEFAULT_LOCALE: &str = "en-GB";
pub const DEFAULT_TIMEZONE: &str = "UTC";
pub const DEFAULT_DATE_FORMAT: &str = "iso";

/// One catalog row with its domains. Timestamps are RFC 3339 UTC text.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TenantRecord {
    /// Hyphenated lower-case UUID; also the tenant's file name.
    pub id: String,
    pub slug: String,
    pub name: String,
    pub status: TenantStatus,
    /// Where its database is kept.
    pub store: TenantStore,
    pub settings: serde_json::Value,
    pub created_at: String,
    pub updated_at: String,
    pub deleted_at: Option<String>,
    /// Primary first, then by name.
    pub domains: Vec<DomainRecord>,
}

impl TenantRecord {
    pub fn primary_domain(&self) -> Option<&str> {
        self.domains
            .iter()
            .find(|d| d.is_primary)
            .map(|d| d.domain.as_str())
    }
}

impl Catalog {
    fn fetch(&self, id: &str) -> Result<Arc<TenantRecord>, CatalogError> {
        self.by_id(id)?
            .ok_or_else(|| CatalogError::NotFound(id.to_string()))
    }

    /// Inserts a tenant, its domains (the first one primary) and its built-in
    /// roles in one transaction. The caller picks the id because the tenant's file is
    /// named after it and exists before the row does.
    pub fn insert_tenant(
        &self,
        id: &uuid::Uuid,
        slug: &str,
        name: &str,
        domains: &[String],
    ) -> Result<Arc<TenantRecord>, CatalogError> {
        self.insert_tenant_row(
            id,
            slug,
            name,
            domains,
            TenantStatus::Active,
            TenantStore::Local,
        )?;
        self.fetch(&id.hyphenated().to_string())
    }

    /// The insert alone: `Ok` means the row is committed, which provisioning
    /// needs to know exactly before it decides to remove the tenant's file.
    pub(crate) fn insert_tenant_row(
        &self,
        id: &uuid::Uuid,
        slug: &str,
        name: &str,
        domains: &[String],
        status: TenantStatus,
        store: TenantStore,
    ) -> Result<(), CatalogError> {
        let id = id.hyphenated().to_string();
        validate_slug(slug)?;
        let name = validate_name(name)?;
        let domains = validate_domains(domains)?;
        self.write_sql(|tx: &dyn Sql| {
            if slug_owner(tx, slug)?.is_some() {
                return Err(CatalogError::SlugTaken(slug.to_string()));
            }
            for domain in &domains {
                if domain_owner(tx, domain)?.is_some() {
                    return Err(CatalogError::DomainTaken(domain.clone()));
                }
            }
            let now = db::now_rfc3339();
            tx.execute(
                "INSERT INTO tenants (id, slug, name, status, settings, created_at, updated_at,
                                      store)
                 VALUES (?1, ?2, ?3, ?5, '{}', ?4, ?4, ?6)",
                args![
                    id.as_str(),
                    slug,
                    name.as_str(),
                    now.as_str(),
                    status.as_str(),
                    store.as_str()
                ],
            )
            .map_err(|e| unique_violation(e, slug, ""))?;
            for (i, domain) in domains.iter().enumerate() {
                insert_domain(tx, &id, domain, i == 0)?;
            }
            // Same transaction: no tenant is ever seen without its built-in roles.
            permissions::seed_builtin_roles(tx, &id, &now)?;
            plans::subscribe_new(tx, &id, &self.default_plan(), super::unix_now())?;
            Ok(())
        })
    }

    /// Sets the status; `deleted_at` is stamped on deletion (kept if already
    /// deleted) and cleared otherwise.
    pub fn set_status(
        &self,
        id: &str,
        status: TenantStatus,
    ) -> Result<Arc<TenantRecord>, CatalogError> {
        self.write_sql(|tx: &dyn Sql| {
            let now = db::now_rfc3339();
            let changed = tx.execute(
                "UPDATE tenants
                 SET status = ?2,
                     updated_at = ?3,
                     deleted_at = CASE WHEN ?2 = 'deleted' THEN COALESCE(deleted_at, ?3) END
                 WHERE id = ?1",
                args![id, status.as_str(), now.as_str()],
            )?;
            if changed.rows == 0 {
                return Err(CatalogError::NotFound(id.to_string()));
            }
            Ok(())
        })?;
        self.fetch(id)
    }

    /// Records where the tenant's database is now kept (the last step of a move).
    pub fn set_store(
        &self,
        id: &str,
        store: TenantStore,
    ) -> Result<Arc<TenantRecord>, CatalogError> {
        self.write_sql(|tx: &dyn Sql| {
            let changed = tx.execute(
                "UPDATE tenants SET store = ?2, updated_at = ?3 WHERE id = ?1",
                args![id, store.as_str(), db::now_rfc3339()],
            )?;
            if changed.rows == 0 {
                return Err(CatalogError::NotFound(id.to_string()));
            }
            Ok(())
        })?;
        self.fetch(id)
    }

    /// Replaces the tenant's settings (a JSON object the API has validated) in one write; the
    /// snapshot, and so every reader, sees them from the next request on.
    pub fn set_settings(
        &self,
        id: &str,
        settings: &serde_json::Value,
    ) -> Result<Arc<TenantRecord>, CatalogError> {
        let text = settings.to_string();
        self.write_sql(|tx: &dyn Sql| {
            let changed = tx.execute(
                "UPDATE tenants SET settings = ?2, updated_at = ?3 WHERE id = ?1",
                args![id, text.as_str(), db::now_rfc3339()],
            )?;
            if changed.rows == 0 {
                return Err(CatalogError::NotFound(id.to_string()));
            }
            Ok(())
        })?;
        self.fetch(id)
    }

    /// Changes the slug, the display name or both (`None` keeps the field) in one transaction.
    /// Setting what is already there changes nothing, not even `updated_at`.
    pub fn rename(
        &self,
        id: &str,
        slug: Option<&str>,
        name: Option<&str>,
    ) -> Result<Arc<TenantRecord>, CatalogError> {
        if let Some(slug) = slug {
            validate_slug(slug)?;
        }
        let name = name.map(validate_name).transpose()?;
        self.write_sql(|tx: &dyn Sql| {
            if !tenant_exists(tx, id)? {
                return Err(CatalogError::NotFound(id.to_string()));
            }
            if let Some(slug) = slug {
                if slug_owner(tx, slug)?.is_some_and(|owner| owner != id) {
                    return Err(CatalogError::SlugTaken(slug.to_string()));
                }
            }
            tx.execute(
                "UPDATE tenants SET slug = COALESCE(?2, slug), name = COALESCE(?3, name),
                                    updated_at = ?4
                 WHERE id = ?1 AND (slug <> COALESCE(?2, slug) OR name <> COALESCE(?3, name))",
                args![id, slug, name.as_deref(), db::now_rfc3339()],
            )
            .map_err(|e| unique_violation(e, slug.unwrap_or_default(), ""))?;
            Ok(())
        })?;
        self.fetch(id)
    }

    /// Adds a domain; it becomes primary if the tenant has none. Adding a
    /// domain the tenant already has changes nothing.
    pub fn add_domain(&self, id: &str, domain: &str) -> Result<Arc<TenantRecord>, CatalogError> {
        let domain = validate_domain(domain)?;
        self.write_sql(|tx: &dyn Sql| {
            if !tenant_exists(tx, id)? {
                return Err(CatalogError::NotFound(id.to_string()));
            }
            match domain_owner(tx, &domain)? {
                Some(owner) if owner == id => return Ok(()),
                Some(_) => return Err(CatalogError::DomainTaken(domain.clone())),
                None => {}
            }
            let has_primary: bool = tx.query_one(
                "SELECT EXISTS (SELECT 1 FROM domains WHERE tenant_id = ?1 AND is_primary = 1)",
                args![id],
                |row| row.get(0),
            )?;
            insert_domain(tx, id, &domain, !has_primary)?;
            touch(tx, id)
        })?;
        self.fetch(id)
    }

    /// Removes one of the tenant's domains. If it was the primary one, the
    /// alphabetically first remaining domain becomes primary.
    pub fn remove_domain(&self, id: &str, domain: &str) -> Result<Arc<TenantRecord>, CatalogError> {
        let domain = normalize_host(domain).into_owned();
        self.write_sql(|tx: &dyn Sql| {
            let was_primary: Option<bool> = tx.query_row(
                "DELETE FROM domains WHERE domain = ?1 AND tenant_id = ?2 RETURNING is_primary",
                args![domain.as_str(), id],
                |row| row.get(0),
            )?;
            match was_primary {
                None => return Err(CatalogError::DomainNotFound(domain.clone())),
                Some(true) => {
                    tx.execute(
                        "UPDATE domains SET is_primary = 1
                         WHERE domain = (SELECT domain FROM domains WHERE tenant_id = ?1
                                         ORDER BY domain LIMIT 1)",
                        args![id],
                    )?;
                }
                Some(false) => {}
            }
            touch(tx, id)
        })?;
        self.fetch(id)
    }

    /// Moves a tenant to `to` only if its status is still one of `from`, in one
    /// transaction, so two lifecycle changes racing each other cannot both act
    /// on a status that one of them already changed. `None`: the status was
    /// not one of `from` (the caller re-reads and decides what to say).
    pub fn transition(
        &self,
        id: &str,
        from: &[TenantStatus],
        to: TenantStatus,
    ) -> Result<Option<Arc<TenantRecord>>, CatalogError> {
        let changed = self.write_sql(|tx: &dyn Sql| {
            let now = db::now_rfc3339();
            let mut changed = 0;
            for status in from {
                changed += tx
                    .execute(
                        "UPDATE tenants
                         SET status = ?2,
                             updated_at = ?3,
                             deleted_at = CASE WHEN ?2 = 'deleted' THEN COALESCE(deleted_at, ?3)
                                          END
                         WHERE id = ?1 AND status = ?4",
                        args![id, to.as_str(), now.as_str(), status.as_str()],
                    )?
                    .rows;
            }
            Ok::<_, CatalogError>(changed)
        })?;
        if changed == 0 {
            return Ok(None);
        }
        self.fetch(id).map(Some)
    }

    /// Deletes the row only if the tenant is (still) deleted, in one
    /// transaction: a restore that got there first wins. Its domains, roles,
    /// memberships and tenant-bound sessions go with it; audit rows stay.
    pub fn delete_row_if_deleted(&self, id: &str) -> Result<bool, CatalogError> {
        self.write_sql(|tx: &dyn Sql| {
            Ok(tx
                .execute(
                    "DELETE FROM tenants WHERE id = ?1 AND status = 'deleted'",
                    args![id],
                )?
                .rows
                == 1)
        })
    }

    /// Deletes the row; its domains, roles, memberships and tenant-bound
    /// sessions go with it (ON DELETE CASCADE). Audit rows stay.
    pub fn delete_row(&self, id: &str) -> Result<(), CatalogError> {
        self.write_sql(|tx: &dyn Sql| {
            if tx
                .execute("DELETE FROM tenants WHERE id = ?1", args![id])?
                .rows
                == 0
            {
                return Err(CatalogError::NotFound(id.to_string()));
            }
            Ok(())
        })
    }
}

/// Validates and lower-cases every domain; a domain listed twice is refused.
pub fn validate_domains(domains: &[String]) -> Result<Vec<String>, ValidationError> {
    let mut out: Vec<String> = Vec::with_capacity(domains.len());
    for domain in domains {
        let domain = validate_domain(domain)?;
        if out.contains(&domain) {
            return Err(ValidationError {
                field: "domain",
                message: "listed more than once".to_string(),
            });
        }
        out.push(domain);
    }
    Ok(out)
}

fn slug_owner(db: &dyn Sql, slug: &str) -> Result<Option<String>, StoreError> {
    db.query_row(
        "SELECT id FROM tenants WHERE slug = ?1",
        args![slug],
        |row| row.get(0),
    )
}

fn domain_owner(db: &dyn Sql, domain: &str) -> Result<Option<String>, StoreError> {
    db.query_row(
        "SELECT tenant_id FROM domains WHERE domain = ?1",
        args![domain],
        |row| row.get(0),
    )
}

pub(super) fn tenant_exists(db: &dyn Sql, id: &str) -> Result<bool, StoreError> {
    db.query_one(
        "SELECT EXISTS (SELECT 1 FROM tenants WHERE id = ?1)",
        args![id],
        |row| row.get(0),
    )
}

fn touch(db: &dyn Sql, id: &str) -> Result<(), CatalogError> {
    db.execute(
        "UPDATE tenants SET updated_at = ?2 WHERE id = ?1",
        args![id, db::now_rfc3339()],
    )?;
    Ok(())
}

fn insert_domain(db: &dyn Sql, id: &str, domain: &str, primary: bool) -> Result<(), CatalogError> {
    db.execute(
        "INSERT INTO domains (domain, tenant_id, is_primary) VALUES (?1, ?2, ?3)",
        args![domain, id, primary],
    )
    .map_err(|e| unique_violation(e, "", domain))?;
    Ok(())
}

/// The in-transaction checks already catch conflicts; this maps a unique
/// violation that still gets through to the same errors.
fn unique_violation(e: StoreError, slug: &str, domain: &str) -> CatalogError {
    if e.is_constraint() {
        if e.message().contains("tenants.slug") {
            return CatalogError::SlugTaken(slug.to_string());
        }
        if e.message().contains("domains.domain") {
            return CatalogError::DomainTaken(domain.to_string());
        }
    }
    CatalogError::from(e)
}
