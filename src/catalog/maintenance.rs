//! Maintenance mode: which tenants are down (and whether the whole server is), for how long
//! clients should wait, who may pass anyway (addresses, a bypass cookie). Written by the CLI
//! and the admin API; read from the snapshot by the request pipeline and the job workers.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use super::{tenants::tenant_exists, Catalog, CatalogError, ValidationError};
use crate::args;
use crate::db;
use crate::store::{Sql, StoreError};

/// The scope of the row that takes the whole server down; a tenant's row has its id.
pub const SERVER: &str = "*";

/// The longest `Retry-After` accepted: a week.
pub const MAX_RETRY_AFTER: i64 = 7 * 24 * 3600;

/// One scope in maintenance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Maintenance {
    pub scope: String,
    pub retry_after: Option<u32>,
    pub allow_ips: Vec<IpAddr>,
    /// The bypass cookie's value (an HMAC of the secret); never shown.
    #[serde(skip)]
    pub bypass: Option<String>,
    pub since: String,
}

impl Maintenance {
    /// Whether a secret URL `/<secret>` was set, and `secret` is it.
    pub fn secret_matches(&self, secret: &str) -> bool {
        self.bypass
            .as_deref()
            .is_some_and(|b| constant_eq(b, &bypass_value(secret, &self.scope)))
    }

    /// Whether a bypass cookie's value lets its bearer in.
    pub fn cookie_matches(&self, value: &str) -> bool {
        self.bypass
            .as_deref()
            .is_some_and(|b| constant_eq(b, value))
    }
}

/// What the operator asks for, not yet checked.
#[derive(Debug, Default)]
pub struct DownRequest<'a> {
    pub retry_after: Option<i64>,
    pub allow_ips: &'a [String],
    pub secret: Option<&'a str>,
}

/// The cookie value for `secret` on `scope`: keyed by the secret, over the scope, so the same
/// secret on two tenants gives two cookies and the cookie never reveals the secret.
pub fn bypass_value(secret: &str, scope: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(b"tenantd maintenance bypass\n");
    mac.update(scope.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A secret is one URL path segment no route uses: 16 to 128 of `[A-Za-z0-9_-]`.
fn validate_secret(secret: &str) -> Result<(), ValidationError> {
    let ok = (16..=128).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ValidationError {
            field: "secret",
            message: "must be 16 to 128 letters, digits, '-' or '_'".into(),
        })
    }
}

fn validate(down: &DownRequest) -> Result<(Option<u32>, Vec<IpAddr>), ValidationError> {
    let retry_after = match down.retry_after {
        None => None,
        Some(s) if (0..=MAX_RETRY_AFTER).contains(&s) => u32::try_from(s).ok(),
        Some(_) => {
            return Err(ValidationError {
                field: "retry_after",
                message: format!("must be 0 to {MAX_RETRY_AFTER} seconds"),
            })
        }
    };
    let ips = down
        .allow_ips
        .iter()
        .map(|ip| {
            ip.trim().parse::<IpAddr>().map_err(|_| ValidationError {
                field: "allow_ip",
                message: format!("{ip:?} is not an IP address"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(secret) = down.secret {
        validate_secret(secret)?;
    }
    Ok((retry_after, ips))
}

impl Catalog {
    /// Takes `scope` (a tenant id, or [`SERVER`]) down, replacing any earlier settings.
    pub fn maintenance_down(
        &self,
        scope: &str,
        down: &DownRequest,
    ) -> Result<Maintenance, CatalogError> {
        let (retry_after, allow_ips) = validate(down)?;
        let m = Maintenance {
            scope: scope.to_string(),
            retry_after,
            allow_ips,
            bypass: down.secret.map(|s| bypass_value(s, scope)),
            since: db::now_rfc3339(),
        };
        let ips = serde_json::to_string(&m.allow_ips).expect("addresses serialize");
        self.write_sql(|db| {
            if scope != SERVER && !tenant_exists(db, scope)? {
                return Err(CatalogError::NotFound(scope.to_string()));
            }
            db.execute(
                "INSERT OR REPLACE INTO maintenance (scope, retry_after, allow_ips, bypass, since)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                args![
                    m.scope.as_str(),
                    m.retry_after,
                    ips.as_str(),
                    m.bypass.as_deref(),
                    m.since.as_str()
                ],
            )?;
            Ok(())
        })?;
        Ok(m)
    }

    /// Brings `scope` back up; `false` if it was not down.
    pub fn maintenance_up(&self, scope: &str) -> Result<bool, CatalogError> {
        self.write_sql(|db| {
            Ok(db
                .execute("DELETE FROM maintenance WHERE scope = ?1", args![scope])?
                .rows
                == 1)
        })
    }
}

/// Every row, as of the caller's transaction.
pub(super) fn load(db: &dyn Sql) -> Result<Vec<Maintenance>, CatalogError> {
    Ok(db.query_map(
        "SELECT scope, retry_after, allow_ips, bypass, since FROM maintenance ORDER BY scope",
        &[],
        |row| {
            let ips: String = row.get(2)?;
            let retry_after = match row.get::<Option<i64>>(1)? {
                None => None,
                // Refused out of range, as rusqlite refused it.
                Some(s) => Some(u32::try_from(s).map_err(|_| StoreError::Type {
                    column: 1,
                    expected: "integer from 0 to 2^32 - 1",
                    found: "integer out of range",
                })?),
            };
            Ok(Maintenance {
                scope: row.get(0)?,
                retry_after,
                // Written by us from parsed addresses; a hand-edited row that does not parse
                // lets no address through rather than taking the server down.
                allow_ips: serde_json::from_str(&ips).unwrap_or_default(),
                bypass: row.get(3)?,
                since: row.get(4)?,
            })
        },
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_not_the_secret_and_differs_per_scope() {
        let secret = "open-sesame-0123456789";
        let a = bypass_value(secret, "a");
        assert_ne!(a, bypass_value(secret, "b"));
        assert!(!a.contains(secret));
        let m = Maintenance {
            scope: "a".into(),
            retry_after: None,
            allow_ips: vec![],
            bypass: Some(a.clone()),
            since: String::new(),
        };
        assert!(m.secret_matches(secret));
        assert!(!m.secret_matches("open-sesame-0123456780"));
        assert!(m.cookie_matches(&a));
        assert!(!m.cookie_matches(secret));
    }

    #[test]
    fn bad_input_is_refused_by_field() {
        let field = |d: DownRequest| validate(&d).unwrap_err().field;
        assert_eq!(
            field(DownRequest {
                retry_after: Some(-1),
                ..Default::default()
            }),
            "retry_after"
        );
        let ips = ["10.0.0.300".to_string()];
        assert_eq!(
            field(DownRequest {
                allow_ips: &ips,
                ..Default::default()
            }),
            "allow_ip"
        );
        assert_eq!(
            field(DownRequest {
                secret: Some("short"),
                ..Default::default()
            }),
            "secret"
        );
        assert_eq!(
            field(DownRequest {
                secret: Some("has/a/slash/in/it!!"),
                ..Default::default()
            }),
            "secret"
        );
        let ok = ["::1".to_string(), "127.0.0.1".to_string()];
        let (r, ips) = validate(&DownRequest {
            retry_after: Some(0),
            allow_ips: &ok,
            secret: None,
        })
        .unwrap();
        assert_eq!((r, ips.len()), (Some(0), 2));
    }
}
