//! Inbound webhooks' catalog rows: each tenant's secret per source (made and replaced by the
//! tenant's admins, read by the verification of every inbound request), the server's own secret
//! for the `billing` source (system admins only: in `meta`, out of every tenant's reach) and the
//! deliveries accepted, by webhook-id, so that a repeated delivery gets its first job again.
//! Times are unix seconds, passed in.

use serde::Serialize;

use super::{Catalog, CatalogError};
use crate::args;

/// How long an accepted webhook-id is remembered: longer than senders go on retrying (the
/// common ones stop within a few days).
pub const DELIVERY_MEMORY_SECS: i64 = 7 * 24 * 3600;

/// A source's secret as its admins may see it: whether it is set and when, never the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InboundSecretInfo {
    pub created_at: i64,
    pub rotated_at: Option<i64>,
}

/// The `meta` keys of the billing source's secret and its times. Not a row of
/// `inbound_secrets`: those are the tenants' own, and a tenant must never hold the key that
/// sets its own plan.
const BILLING_SECRET: &str = "inbound_billing_secret";
const BILLING_CREATED_AT: &str = "inbound_billing_secret_created_at";
const BILLING_ROTATED_AT: &str = "inbound_billing_secret_rotated_at";

impl Catalog {
    /// The server's secret for the `billing` source (`whsec_...`), if one was made.
    pub fn billing_secret(&self) -> Result<Option<String>, CatalogError> {
        self.meta_get(BILLING_SECRET)
    }

    /// When the billing secret was made and last replaced, if it was.
    pub fn billing_secret_info(&self) -> Result<Option<InboundSecretInfo>, CatalogError> {
        let time = |key| -> Result<Option<i64>, CatalogError> {
            Ok(self.meta_get(key)?.and_then(|v| v.parse().ok()))
        };
        if self.billing_secret()?.is_none() {
            return Ok(None);
        }
        Ok(Some(InboundSecretInfo {
            created_at: time(BILLING_CREATED_AT)?.unwrap_or(0),
            rotated_at: time(BILLING_ROTATED_AT)?,
        }))
    }

    /// Sets the billing source's secret, replacing any older one at once.
    pub fn set_billing_secret(
        &self,
        secret: &str,
        now: i64,
    ) -> Result<InboundSecretInfo, CatalogError> {
        self.write_sql(|db| {
            let set = |key: &str, value: &str| {
                db.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    args![key, value],
                )
            };
            let created: Option<String> = db.query_row(
                "SELECT value FROM meta WHERE key = ?1",
                args![BILLING_CREATED_AT],
                |row| row.get(0),
            )?;
            let had_secret: bool = db
                .query_one(
                    "SELECT count(*) FROM meta WHERE key = ?1",
                    args![BILLING_SECRET],
                    |row| row.get::<i64>(0),
                )
                .map(|n| n > 0)?;
            set(BILLING_SECRET, secret)?;
            let info = match created.and_then(|c| c.parse().ok()) {
                Some(created_at) if had_secret => {
                    set(BILLING_ROTATED_AT, &now.to_string())?;
                    InboundSecretInfo {
                        created_at,
                        rotated_at: Some(now),
                    }
                }
                _ => {
                    set(BILLING_CREATED_AT, &now.to_string())?;
                    db.execute("DELETE FROM meta WHERE key = ?1", args![BILLING_ROTATED_AT])?;
                    InboundSecretInfo {
                        created_at: now,
                        rotated_at: None,
                    }
                }
            };
            Ok(info)
        })
    }

    /// The tenant's secret for `source` (`whsec_...`), if one was made.
    pub fn inbound_secret(
        &self,
        tenant_id: &str,
        source: &str,
    ) -> Result<Option<String>, CatalogError> {
        self.read(|db| {
            Ok(db.query_row(
                "SELECT secret FROM inbound_secrets WHERE tenant_id = ?1 AND source = ?2",
                args![tenant_id, source],
                |row| row.get(0),
            )?)
        })
    }

    /// When each source of the tenant that has a secret got it.
    pub fn inbound_secret_infos(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<(String, InboundSecretInfo)>, CatalogError> {
        self.read(|db| {
            Ok(db.query_map(
                "SELECT source, created_at, rotated_at FROM inbound_secrets
                 WHERE tenant_id = ?1 ORDER BY source",
                args![tenant_id],
                |row| {
                    Ok((
                        row.get(0)?,
                        InboundSecretInfo {
                            created_at: row.get(1)?,
                            rotated_at: row.get(2)?,
                        },
                    ))
                },
            )?)
        })
    }

    /// Sets the tenant's secret for `source`, replacing any older one at once.
    pub fn set_inbound_secret(
        &self,
        tenant_id: &str,
        source: &str,
        secret: &str,
        now: i64,
    ) -> Result<InboundSecretInfo, CatalogError> {
        self.write_sql(|db| {
            Ok(db.query_one(
                "INSERT INTO inbound_secrets (tenant_id, source, secret, created_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant_id, source)
                 DO UPDATE SET secret = excluded.secret, rotated_at = excluded.created_at
                 RETURNING created_at, rotated_at",
                args![tenant_id, source, secret, now],
                |row| {
                    Ok(InboundSecretInfo {
                        created_at: row.get(0)?,
                        rotated_at: row.get(1)?,
                    })
                },
            )?)
        })
    }

    /// The job of a delivery accepted before, by its webhook-id.
    pub fn inbound_delivery(
        &self,
        tenant_id: &str,
        source: &str,
        webhook_id: &str,
    ) -> Result<Option<i64>, CatalogError> {
        self.read(|db| {
            Ok(db.query_row(
                "SELECT job_id FROM inbound_deliveries
                 WHERE tenant_id = ?1 AND source = ?2 AND webhook_id = ?3",
                args![tenant_id, source, webhook_id],
                |row| row.get(0),
            )?)
        })
    }

    /// Remembers an accepted delivery and forgets those older than [`DELIVERY_MEMORY_SECS`].
    /// Answers the job the catalog holds for it: `job_id`, or the job of a twin that was
    /// recorded first.
    pub fn record_inbound_delivery(
        &self,
        tenant_id: &str,
        source: &str,
        webhook_id: &str,
        job_id: i64,
        now: i64,
    ) -> Result<i64, CatalogError> {
        self.write_uncounted_sql(|db| {
            db.execute(
                "DELETE FROM inbound_deliveries WHERE received_at < ?1",
                args![now - DELIVERY_MEMORY_SECS],
            )?;
            db.execute(
                "INSERT INTO inbound_deliveries (tenant_id, source, webhook_id, job_id, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                args![tenant_id, source, webhook_id, job_id, now],
            )?;
            Ok::<_, CatalogError>(db.query_one(
                "SELECT job_id FROM inbound_deliveries
                 WHERE tenant_id = ?1 AND source = ?2 AND webhook_id = ?3",
                args![tenant_id, source, webhook_id],
                |row| row.get(0),
            )?)
        })
    }
}
