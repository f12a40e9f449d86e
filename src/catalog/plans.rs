//! Plans (limits and feature switches, editable by system admins) and each tenant's one
//! current subscription (plan and billing status). Every change is audited. Limits are
//! enforced by the writes they count (see `Entitlements::check`): the count and the insert
//! share one transaction, so concurrent writers cannot pass a limit together.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{AuditEntry, Catalog, CatalogError, ValidationError};
use crate::args;
use crate::store::{RowRef, Sql, StoreError};

/// The plan a new tenant gets unless the server is told otherwise: no limits, as before plans.
pub const DEFAULT_PLAN: &str = "unlimited";

/// How long a `past_due` subscription keeps writing after its period ended: a week.
pub const DEFAULT_BILLING_GRACE_SECS: i64 = 7 * 24 * 3600;

/// The limits the code counts; others may be stored but nothing enforces them.
pub const LIMITS: [&str; 9] = [
    "members",
    "orders",
    "chats",
    "messages_per_day",
    "webhook_endpoints",
    "storage_mb",
    "file_size_mb",
    TENANT_RATE_LIMIT,
    MEMBER_RATE_LIMIT,
];

/// Tenant-route requests per minute for the whole tenant (its rate-limit bucket, see
/// `api::rate_limit`); a plan that does not name it leaves the server's `--tenant-rate`.
pub const TENANT_RATE_LIMIT: &str = "api_requests_per_minute";

/// The same for each member of the tenant; the fallback is `--member-rate`.
pub const MEMBER_RATE_LIMIT: &str = "api_requests_per_member_per_minute";

/// The highest rate a plan may name: the bound of the server's `--tenant-rate` and
/// `--member-rate`. A rate cannot be 0: a plan turns no limit off, it names a rate or leaves the
/// server's (0 would otherwise mean "nothing allowed", as for the other limits, or "off", as
/// for the flags).
pub const MAX_RATE: i64 = 1 << 24;

/// The feature switches the code asks about.
pub const FEATURES: [&str; 2] = ["webhooks", "exports"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub slug: String,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
    /// A feature not named is on.
    pub features: BTreeMap<String, bool>,
    /// A limit not named is unlimited.
    pub limits: BTreeMap<String, i64>,
    pub active: bool,
}

/// The request rates a plan names; `None` leaves the server's flag in force.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanRates {
    pub tenant_per_min: Option<u32>,
    pub member_per_min: Option<u32>,
}

impl PlanRates {
    fn of(limits: &BTreeMap<String, i64>) -> PlanRates {
        // Only a hand-edited row can hold a value out of range: below 1 counts as not named,
        // above the bound as the bound.
        let rate = |name: &str| {
            limits
                .get(name)
                .filter(|v| **v >= 1)
                .map(|v| (*v).min(MAX_RATE) as u32)
        };
        PlanRates {
            tenant_per_min: rate(TENANT_RATE_LIMIT),
            member_per_min: rate(MEMBER_RATE_LIMIT),
        }
    }
}

impl Plan {
    pub fn limit(&self, name: &str) -> Option<i64> {
        self.limits.get(name).copied()
    }

    pub fn rates(&self) -> PlanRates {
        PlanRates::of(&self.limits)
    }

    pub fn feature(&self, name: &str) -> bool {
        self.features.get(name).copied().unwrap_or(true)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Trialing,
    Active,
    PastDue,
    Canceled,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Trialing => "trialing",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::PastDue => "past_due",
            SubscriptionStatus::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<SubscriptionStatus> {
        match s {
            "trialing" => Some(SubscriptionStatus::Trialing),
            "active" => Some(SubscriptionStatus::Active),
            "past_due" => Some(SubscriptionStatus::PastDue),
            "canceled" => Some(SubscriptionStatus::Canceled),
            _ => None,
        }
    }
}

/// A tenant's current subscription. Times are Unix seconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Subscription {
    pub tenant_id: String,
    pub plan: String,
    pub status: SubscriptionStatus,
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
    pub trial_end: Option<i64>,
    pub canceled_at: Option<i64>,
    pub external_ref: Option<String>,
    pub metadata: serde_json::Value,
    pub updated_at: i64,
}

impl Subscription {
    /// Whether the tenant may write at `now`: a trial that ended, a canceled subscription,
    /// or one past due for longer than `grace` seconds after its period ended (or after it
    /// became past due, when no period is known) leaves the tenant read-only.
    pub fn writable(&self, now: i64, grace: i64) -> bool {
        self.read_only(now, grace).is_none()
    }

    /// Why the tenant is read-only at `now`, and since when, if it is (see [`writable`]).
    ///
    /// [`writable`]: Subscription::writable
    pub fn read_only(&self, now: i64, grace: i64) -> Option<ReadOnly> {
        let (reason, since) = match self.status {
            SubscriptionStatus::Active => return None,
            SubscriptionStatus::Trialing => match self.trial_end {
                Some(end) if now >= end => ("trial_ended", Some(end)),
                _ => return None,
            },
            SubscriptionStatus::PastDue => {
                let from = self
                    .current_period_end
                    .unwrap_or(self.updated_at)
                    .saturating_add(grace);
                if now < from {
                    return None;
                }
                ("past_due", Some(from))
            }
            SubscriptionStatus::Canceled => ("canceled", self.canceled_at),
        };
        Some(ReadOnly { reason, since })
    }
}

/// Why a tenant is read-only: `trial_ended`, `past_due` (beyond the grace) or `canceled`, and
/// since when (Unix seconds; unknown for a cancellation stored without its time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ReadOnly {
    pub reason: &'static str,
    pub since: Option<i64>,
}

/// What a tenant may do: its subscription and its plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entitlements {
    pub subscription: Subscription,
    pub plan: Plan,
}

/// A write refused by the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaExceeded {
    pub limit_name: &'static str,
    pub limit: i64,
    pub usage: i64,
}

impl Entitlements {
    pub fn feature(&self, name: &str) -> bool {
        self.plan.feature(name)
    }

    /// Whether adding `adding` to `usage` stays within the limit `name`.
    pub fn check(&self, name: &'static str, usage: i64, adding: i64) -> Result<(), QuotaExceeded> {
        match self.plan.limit(name) {
            Some(limit) if usage.saturating_add(adding) > limit => Err(QuotaExceeded {
                limit_name: name,
                limit,
                usage,
            }),
            _ => Ok(()),
        }
    }
}

/// A change to a plan: limits set (`Some`) or removed (`None`, unlimited), features switched.
#[derive(Clone, Debug, Default)]
pub struct PlanEdit {
    pub limits: Vec<(String, Option<i64>)>,
    pub features: Vec<(String, bool)>,
    pub active: Option<bool>,
}

/// A change to a tenant's subscription; fields left `None` keep their value, except that a
/// new plan starts a new period.
#[derive(Clone, Debug, Default)]
pub struct SubscriptionChange {
    pub plan: Option<String>,
    pub status: Option<SubscriptionStatus>,
    pub trial_end: Option<i64>,
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
    pub external_ref: Option<String>,
    /// Replaces the stored metadata: a JSON object of at most [`METADATA_MAX_BYTES`].
    pub metadata: Option<serde_json::Value>,
}

/// The largest `metadata` a subscription keeps, as JSON text.
pub const METADATA_MAX_BYTES: usize = 4096;
/// The longest `external_ref` (a payment provider's id for the subscription).
pub const EXTERNAL_REF_MAX_CHARS: usize = 200;

impl SubscriptionChange {
    /// What can be judged without the catalog; the same for every way in (admin API, CLI,
    /// the billing webhook).
    pub fn check(&self) -> Result<(), CatalogError> {
        if let Some(r) = &self.external_ref {
            if r.is_empty() || r.chars().count() > EXTERNAL_REF_MAX_CHARS {
                return Err(invalid(
                    "external_ref",
                    format!("must be 1 to {EXTERNAL_REF_MAX_CHARS} characters"),
                ));
            }
            if r.chars().any(char::is_control) {
                return Err(invalid(
                    "external_ref",
                    "must not contain control characters",
                ));
            }
        }
        for (field, value) in [
            ("trial_end", self.trial_end),
            ("current_period_start", self.current_period_start),
            ("current_period_end", self.current_period_end),
        ] {
            if value.is_some_and(|v| v < 0) {
                return Err(invalid(field, "must be Unix seconds (0 or more)"));
            }
        }
        if let (Some(start), Some(end)) = (self.current_period_start, self.current_period_end) {
            if end < start {
                return Err(invalid(
                    "current_period_end",
                    "must not be before current_period_start",
                ));
            }
        }
        if let Some(m) = &self.metadata {
            if !m.is_object() {
                return Err(invalid("metadata", "must be a JSON object"));
            }
            if m.to_string().len() > METADATA_MAX_BYTES {
                return Err(invalid(
                    "metadata",
                    format!("must be at most {METADATA_MAX_BYTES} bytes as JSON"),
                ));
            }
        }
        Ok(())
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> CatalogError {
    CatalogError::Validation(ValidationError {
        field,
        message: message.into(),
    })
}

/// Limit and feature names: 1 to 64 of `[a-z0-9_]`.
fn check_name(field: &'static str, name: &str) -> Result<(), CatalogError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{name:?} must be 1 to 64 of a-z, 0-9 and '_'"),
        ))
    }
}

fn plan_row(row: &dyn RowRef) -> Result<Plan, StoreError> {
    let features: String = row.get(4)?;
    let limits: String = row.get(5)?;
    Ok(Plan {
        slug: row.get(0)?,
        name: row.get(1)?,
        price_minor: row.get(2)?,
        currency: row.get(3)?,
        // Written by us from checked maps; a hand-edited value that does not parse counts
        // as empty (no limits, every feature on) rather than locking every tenant out.
        features: serde_json::from_str(&features).unwrap_or_default(),
        limits: serde_json::from_str(&limits).unwrap_or_default(),
        active: row.get(6)?,
    })
}

const PLAN_COLUMNS: &str = "slug, name, price_minor, currency, features, limits, active";

pub(super) fn load_plan(db: &dyn Sql, slug: &str) -> Result<Option<Plan>, StoreError> {
    db.query_row(
        &format!("SELECT {PLAN_COLUMNS} FROM plans WHERE slug = ?1"),
        args![slug],
        plan_row,
    )
}

fn load_subscription(db: &dyn Sql, tenant_id: &str) -> Result<Option<Subscription>, StoreError> {
    db.query_row(
        "SELECT tenant_id, plan, status, current_period_start, current_period_end, trial_end,
                canceled_at, external_ref, metadata, updated_at
         FROM subscriptions WHERE tenant_id = ?1",
        args![tenant_id],
        |row| {
            let status: String = row.get(2)?;
            let metadata: String = row.get(8)?;
            Ok(Subscription {
                tenant_id: row.get(0)?,
                plan: row.get(1)?,
                status: SubscriptionStatus::parse(&status).unwrap_or(SubscriptionStatus::Active),
                current_period_start: row.get(3)?,
                current_period_end: row.get(4)?,
                trial_end: row.get(5)?,
                canceled_at: row.get(6)?,
                external_ref: row.get(7)?,
                metadata: serde_json::from_str(&metadata).unwrap_or_default(),
                updated_at: row.get(9)?,
            })
        },
    )
}

/// The tenant's entitlements as of `db`'s transaction. A tenant without a row (made by an
/// older binary beside this one) is on the default plan.
pub(crate) fn entitlements_in(db: &dyn Sql, tenant_id: &str) -> Result<Entitlements, CatalogError> {
    let subscription = match load_subscription(db, tenant_id)? {
        Some(s) => s,
        None => Subscription {
            tenant_id: tenant_id.to_string(),
            plan: DEFAULT_PLAN.to_string(),
            status: SubscriptionStatus::Active,
            current_period_start: None,
            current_period_end: None,
            trial_end: None,
            canceled_at: None,
            external_ref: None,
            metadata: serde_json::json!({}),
            updated_at: 0,
        },
    };
    let plan = load_plan(db, &subscription.plan)?.ok_or_else(|| CatalogError::Corrupt {
        id: tenant_id.to_string(),
        message: format!("its plan {} does not exist", subscription.plan),
    })?;
    Ok(Entitlements { subscription, plan })
}

/// The rates of the tenant's plan (the default plan's for a tenant without a subscription row,
/// as in [`entitlements_in`]). A plan gone from under its subscription (only possible by hand,
/// with foreign keys off) names none: the server's flags apply rather than every request failing.
fn plan_rates_in(db: &dyn Sql, tenant_id: &str) -> Result<PlanRates, StoreError> {
    let limits: Option<String> = db.query_row(
        "SELECT limits FROM plans WHERE slug = coalesce(
             (SELECT plan FROM subscriptions WHERE tenant_id = ?1), ?2)",
        args![tenant_id, DEFAULT_PLAN],
        |r| r.get(0),
    )?;
    let limits: BTreeMap<String, i64> = limits
        .and_then(|l| serde_json::from_str(&l).ok())
        .unwrap_or_default();
    Ok(PlanRates::of(&limits))
}

/// `Some((limit, usage))` when one more member would pass the tenant's `members` limit.
pub(super) fn members_over_limit(
    db: &dyn Sql,
    tenant_id: &str,
) -> Result<Option<(i64, i64)>, StoreError> {
    let limit: Option<i64> = db
        .query_row(
            "SELECT json_extract(p.limits, '$.members') FROM subscriptions s
             JOIN plans p ON p.slug = s.plan WHERE s.tenant_id = ?1",
            args![tenant_id],
            |r| r.get(0),
        )?
        .flatten();
    let Some(limit) = limit else {
        return Ok(None);
    };
    let usage = member_count_in(db, tenant_id)?;
    Ok((usage >= limit).then_some((limit, usage)))
}

fn member_count_in(db: &dyn Sql, tenant_id: &str) -> Result<i64, StoreError> {
    db.query_one(
        "SELECT count(*) FROM memberships WHERE tenant_id = ?1",
        args![tenant_id],
        |r| r.get(0),
    )
}

/// Gives a new tenant its subscription, in the transaction that inserts it.
pub(super) fn subscribe_new(
    db: &dyn Sql,
    tenant_id: &str,
    plan: &str,
    now: i64,
) -> Result<(), CatalogError> {
    if load_plan(db, plan)?.is_none() {
        return Err(CatalogError::PlanNotFound(plan.to_string()));
    }
    db.execute(
        "INSERT INTO subscriptions (tenant_id, plan, status, current_period_start, updated_at)
         VALUES (?1, ?2, 'active', ?3, ?3)",
        args![tenant_id, plan, now],
    )?;
    Ok(())
}

impl Catalog {
    /// The change is committed already: an audit entry that cannot be written is logged
    /// rather than reported as the change failing.
    fn record_audit_logged(&self, entry: &AuditEntry) {
        if let Err(e) = self.record_audit(entry) {
            log::error!("audit entry {} not recorded: {e}", entry.action);
        }
    }

    /// Every plan, by price then slug.
    pub fn plans(&self) -> Result<Vec<Plan>, CatalogError> {
        self.read(|db| {
            Ok(db.query_map(
                &format!("SELECT {PLAN_COLUMNS} FROM plans ORDER BY price_minor, slug"),
                &[],
                plan_row,
            )?)
        })
    }

    pub fn plan(&self, slug: &str) -> Result<Option<Plan>, CatalogError> {
        self.read(|db| Ok(load_plan(db, slug)?))
    }

    /// Applies `edit` to plan `slug` and records `audit` (its actor) as `plan.edited`.
    pub fn edit_plan(
        &self,
        slug: &str,
        edit: &PlanEdit,
        mut audit: AuditEntry,
    ) -> Result<Plan, CatalogError> {
        for (name, value) in &edit.limits {
            check_name("limit", name)?;
            let rate = name == TENANT_RATE_LIMIT || name == MEMBER_RATE_LIMIT;
            if rate && value.is_some_and(|v| !(1..=MAX_RATE).contains(&v)) {
                return Err(invalid(
                    "limit",
                    format!(
                        "{name} must be 1 to {MAX_RATE} requests a minute \
                         (none leaves the server's rate)"
                    ),
                ));
            }
            if value.is_some_and(|v| v < 0) {
                return Err(invalid("limit", format!("{name} must be 0 or more")));
            }
        }
        for (name, _) in &edit.features {
            check_name("feature", name)?;
        }
        let plan = self.write_sql(|db| {
            let mut plan =
                load_plan(db, slug)?.ok_or_else(|| CatalogError::PlanNotFound(slug.into()))?;
            for (name, value) in &edit.limits {
                match value {
                    Some(v) => plan.limits.insert(name.clone(), *v),
                    None => plan.limits.remove(name),
                };
            }
            for (name, on) in &edit.features {
                plan.features.insert(name.clone(), *on);
            }
            if let Some(active) = edit.active {
                plan.active = active;
            }
            db.execute(
                "UPDATE plans SET features = ?2, limits = ?3, active = ?4 WHERE slug = ?1",
                args![
                    slug,
                    serde_json::to_string(&plan.features).expect("a map serializes"),
                    serde_json::to_string(&plan.limits).expect("a map serializes"),
                    plan.active
                ],
            )?;
            Ok::<_, CatalogError>(plan)
        })?;
        audit.action = "plan.edited".into();
        audit.target_type = Some("plan".into());
        audit.target_id = Some(slug.to_string());
        audit.details = serde_json::json!({"limits": plan.limits, "features": plan.features});
        self.record_audit_logged(&audit);
        Ok(plan)
    }

    pub fn member_count(&self, tenant_id: &str) -> Result<i64, CatalogError> {
        self.read(|db| Ok(member_count_in(db, tenant_id)?))
    }

    /// The tenant's subscription and plan, read now (not from the snapshot).
    pub fn entitlements(&self, tenant_id: &str) -> Result<Entitlements, CatalogError> {
        self.read(|db| entitlements_in(db, tenant_id))
    }

    /// The rates of the tenant's plan, kept until the catalog's generation moves (any commit,
    /// here or in another process: a plan edited or a subscription changed counts at once).
    /// Every tenant request's rate limit comes from here, on a miss of the worker's memo.
    pub(crate) fn cached_plan_rates(&self, tenant_id: &str) -> Result<PlanRates, CatalogError> {
        let rates = self.cached(
            |c| &mut c.plan_rates,
            tenant_id,
            || self.read(|db| Ok::<_, CatalogError>(Some(plan_rates_in(db, tenant_id)?))),
        )?;
        Ok(rates.unwrap_or_default())
    }

    /// Changes a tenant's subscription and records `audit` as `subscription.changed`.
    pub fn change_subscription(
        &self,
        tenant_id: &str,
        change: &SubscriptionChange,
        now: i64,
        mut audit: AuditEntry,
    ) -> Result<Subscription, CatalogError> {
        change.check()?;
        let subscription = self.write_sql(|db| {
            if !super::tenants::tenant_exists(db, tenant_id)? {
                return Err(CatalogError::NotFound(tenant_id.to_string()));
            }
            let current = entitlements_in(db, tenant_id)?.subscription;
            let plan = change.plan.clone().unwrap_or(current.plan.clone());
            let target = load_plan(db, &plan)?.ok_or(CatalogError::PlanNotFound(plan.clone()))?;
            if !target.active && plan != current.plan {
                return Err(invalid("plan", format!("plan {plan} is not offered")));
            }
            let status = change.status.unwrap_or(current.status);
            let new_period = plan != current.plan;
            let s = Subscription {
                tenant_id: tenant_id.to_string(),
                status,
                current_period_start: change.current_period_start.or(if new_period {
                    Some(now)
                } else {
                    current.current_period_start
                }),
                current_period_end: change.current_period_end.or(if new_period {
                    None
                } else {
                    current.current_period_end
                }),
                trial_end: change.trial_end.or(current.trial_end),
                canceled_at: match status {
                    SubscriptionStatus::Canceled => current.canceled_at.or(Some(now)),
                    _ => None,
                },
                external_ref: change.external_ref.clone().or(current.external_ref),
                metadata: change.metadata.clone().unwrap_or(current.metadata),
                updated_at: now,
                plan,
            };
            db.execute(
                "INSERT OR REPLACE INTO subscriptions (tenant_id, plan, status,
                     current_period_start, current_period_end, trial_end, canceled_at,
                     external_ref, metadata, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                args![
                    s.tenant_id.as_str(),
                    s.plan.as_str(),
                    s.status.as_str(),
                    s.current_period_start,
                    s.current_period_end,
                    s.trial_end,
                    s.canceled_at,
                    s.external_ref.as_deref(),
                    s.metadata.to_string(),
                    s.updated_at
                ],
            )?;
            Ok(s)
        })?;
        audit.action = "subscription.changed".into();
        audit.tenant_id = Some(tenant_id.to_string());
        audit.target_type = Some("subscription".into());
        audit.target_id = Some(tenant_id.to_string());
        // Beside what the caller noted (how the change came: `via`), what it changed to.
        let mut details = match std::mem::take(&mut audit.details) {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        details.insert("plan".into(), subscription.plan.clone().into());
        details.insert("status".into(), subscription.status.as_str().into());
        audit.details = serde_json::Value::Object(details);
        self.record_audit_logged(&audit);
        Ok(subscription)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ActorType, AuditFilter};
    use crate::test_kit::{add_tenant, Setup};

    fn admin() -> AuditEntry {
        AuditEntry::new(ActorType::System, "cli")
    }

    #[test]
    fn a_new_install_has_the_builtin_plans_and_new_tenants_the_default_one() {
        let Setup { dir: _dir, catalog } = Setup::new();
        let slugs: Vec<String> = catalog
            .plans()
            .unwrap()
            .into_iter()
            .map(|p| p.slug)
            .collect();
        assert_eq!(slugs, ["free", "unlimited", "team"]);
        let acme = add_tenant(&catalog, "acme", &[]);
        let e = catalog.entitlements(&acme.id).unwrap();
        assert_eq!(e.plan.slug, "unlimited");
        assert_eq!(e.subscription.status, SubscriptionStatus::Active);
        assert!(e.check("orders", 1_000_000, 1).is_ok());

        catalog.set_default_plan("free").unwrap();
        let globex = add_tenant(&catalog, "globex", &[]);
        let e = catalog.entitlements(&globex.id).unwrap();
        assert_eq!(e.plan.slug, "free");
        assert!(!e.feature("webhooks"));
        assert_eq!(
            e.check("orders", 100, 1),
            Err(QuotaExceeded {
                limit_name: "orders",
                limit: 100,
                usage: 100
            })
        );
        assert!(e.check("orders", 99, 1).is_ok());
        assert!(matches!(
            catalog.set_default_plan("gold"),
            Err(CatalogError::PlanNotFound(_))
        ));
    }

    #[test]
    fn editing_a_plan_sets_and_removes_limits_and_switches_features_audited() {
        let Setup { dir: _dir, catalog } = Setup::new();
        let edit = PlanEdit {
            limits: vec![("orders".into(), Some(7)), ("chats".into(), None)],
            features: vec![("exports".into(), true)],
            active: None,
        };
        let plan = catalog.edit_plan("free", &edit, admin()).unwrap();
        assert_eq!(plan.limit("orders"), Some(7));
        assert_eq!(plan.limit("chats"), None);
        assert!(plan.feature("exports"));
        assert!(!plan.feature("webhooks"));
        assert_eq!(catalog.plan("free").unwrap().unwrap(), plan);
        let audit = catalog.audit_query(&AuditFilter::default()).unwrap();
        assert!(audit
            .iter()
            .any(|a| a.action == "plan.edited" && a.target_id.as_deref() == Some("free")));

        let bad = |edit: PlanEdit| catalog.edit_plan("free", &edit, admin()).unwrap_err();
        assert!(matches!(
            bad(PlanEdit {
                limits: vec![("orders".into(), Some(-1))],
                ..PlanEdit::default()
            }),
            CatalogError::Validation(_)
        ));
        assert!(matches!(
            bad(PlanEdit {
                features: vec![("Web Hooks".into(), true)],
                ..PlanEdit::default()
            }),
            CatalogError::Validation(_)
        ));
        assert!(matches!(
            catalog.edit_plan("gold", &PlanEdit::default(), admin()),
            Err(CatalogError::PlanNotFound(_))
        ));
    }

    #[test]
    fn a_tenants_plan_rates_follow_its_plan_and_every_edit() {
        let Setup { dir: _dir, catalog } = Setup::new();
        let acme = add_tenant(&catalog, "acme", &[]);
        let globex = add_tenant(&catalog, "globex", &[]);
        let rates = |id: &str| catalog.cached_plan_rates(id).unwrap();
        // `unlimited` names none: the server's flags apply.
        assert_eq!(rates(&acme.id), PlanRates::default());
        let on_free = SubscriptionChange {
            plan: Some("free".into()),
            ..SubscriptionChange::default()
        };
        catalog
            .change_subscription(&acme.id, &on_free, 1, admin())
            .unwrap();
        let free = PlanRates {
            tenant_per_min: Some(600),
            member_per_min: Some(300),
        };
        assert_eq!(rates(&acme.id), free, "the change counts at once");
        assert_eq!(rates(&globex.id), PlanRates::default());
        let edit = PlanEdit {
            limits: vec![
                (TENANT_RATE_LIMIT.into(), Some(42)),
                (MEMBER_RATE_LIMIT.into(), None),
            ],
            ..PlanEdit::default()
        };
        let plan = catalog.edit_plan("free", &edit, admin()).unwrap();
        let edited = PlanRates {
            tenant_per_min: Some(42),
            member_per_min: None,
        };
        assert_eq!(plan.rates(), edited);
        assert_eq!(rates(&acme.id), edited, "the edit counts at once");
        assert_eq!(rates("no-such-tenant"), PlanRates::default());

        for bad in [0, -1, MAX_RATE + 1] {
            let edit = PlanEdit {
                limits: vec![(MEMBER_RATE_LIMIT.into(), Some(bad))],
                ..PlanEdit::default()
            };
            assert!(
                matches!(
                    catalog.edit_plan("free", &edit, admin()),
                    Err(CatalogError::Validation(_))
                ),
                "{bad}"
            );
        }
        let highest = PlanEdit {
            limits: vec![(TENANT_RATE_LIMIT.into(), Some(MAX_RATE))],
            ..PlanEdit::default()
        };
        catalog.edit_plan("free", &highest, admin()).unwrap();
        assert_eq!(rates(&acme.id).tenant_per_min, Some(1 << 24));
    }

    #[test]
    fn the_builtin_plans_name_rates_but_unlimited() {
        let Setup { dir: _dir, catalog } = Setup::new();
        let rates: Vec<(String, PlanRates)> = catalog
            .plans()
            .unwrap()
            .into_iter()
            .map(|p| (p.slug.clone(), p.rates()))
            .collect();
        let named = |t, m| PlanRates {
            tenant_per_min: Some(t),
            member_per_min: Some(m),
        };
        assert_eq!(
            rates,
            [
                ("free".to_string(), named(600, 300)),
                ("unlimited".to_string(), PlanRates::default()),
                ("team".to_string(), named(3000, 600)),
            ]
        );
    }

    #[test]
    fn a_subscription_change_is_the_tenants_alone_and_audited() {
        let Setup { dir: _dir, catalog } = Setup::new();
        let acme = add_tenant(&catalog, "acme", &[]);
        let globex = add_tenant(&catalog, "globex", &[]);
        let change = SubscriptionChange {
            plan: Some("free".into()),
            status: Some(SubscriptionStatus::Trialing),
            trial_end: Some(2_000),
            ..SubscriptionChange::default()
        };
        let s = catalog
            .change_subscription(&acme.id, &change, 1_000, admin())
            .unwrap();
        assert_eq!(s.plan, "free");
        assert_eq!(s.current_period_start, Some(1_000));
        assert_eq!(catalog.entitlements(&acme.id).unwrap().subscription, s);
        assert_eq!(
            catalog.entitlements(&globex.id).unwrap().plan.slug,
            "unlimited"
        );
        let audit = catalog.audit_query(&AuditFilter::default()).unwrap();
        assert!(audit.iter().any(|a| a.action == "subscription.changed"
            && a.tenant_id.as_deref() == Some(acme.id.as_str())));

        let canceled = catalog
            .change_subscription(
                &acme.id,
                &SubscriptionChange {
                    status: Some(SubscriptionStatus::Canceled),
                    ..SubscriptionChange::default()
                },
                1_500,
                admin(),
            )
            .unwrap();
        assert_eq!(canceled.plan, "free");
        assert_eq!(canceled.canceled_at, Some(1_500));

        let unknown = SubscriptionChange {
            plan: Some("gold".into()),
            ..SubscriptionChange::default()
        };
        assert!(matches!(
            catalog.change_subscription(&acme.id, &unknown, 1, admin()),
            Err(CatalogError::PlanNotFound(_))
        ));
        assert!(matches!(
            catalog.change_subscription("no-such-tenant", &change, 1, admin()),
            Err(CatalogError::NotFound(_))
        ));
    }

    #[test]
    fn an_ended_trial_or_past_due_beyond_grace_is_read_only() {
        let mut s = Subscription {
            tenant_id: "t".into(),
            plan: "free".into(),
            status: SubscriptionStatus::Trialing,
            current_period_start: Some(0),
            current_period_end: Some(1_000),
            trial_end: Some(500),
            canceled_at: None,
            external_ref: None,
            metadata: serde_json::json!({}),
            updated_at: 0,
        };
        assert!(s.writable(499, 0));
        assert!(!s.writable(500, 0));
        assert_eq!(
            s.read_only(500, 0),
            Some(ReadOnly {
                reason: "trial_ended",
                since: Some(500)
            })
        );
        s.status = SubscriptionStatus::PastDue;
        assert!(s.writable(1_099, 100));
        assert!(!s.writable(1_100, 100));
        assert_eq!(s.read_only(1_100, 100).unwrap().since, Some(1_100));
        s.status = SubscriptionStatus::Active;
        assert!(s.writable(i64::MAX, 0));
        s.status = SubscriptionStatus::Canceled;
        assert!(!s.writable(0, 0));
        assert_eq!(s.read_only(0, 0).unwrap().reason, "canceled");
    }
}

#[cfg(test)]
mod migration_tests {
    use rusqlite::Connection;

    use super::{PlanRates, MEMBER_RATE_LIMIT, TENANT_RATE_LIMIT};

    use crate::db::{central_migrations, migrate};

    /// A tenant made before plans existed keeps doing all it did: it starts on `unlimited`.
    #[test]
    fn tenants_from_before_plans_start_on_unlimited() {
        let mut conn = Connection::open_in_memory().unwrap();
        let all = central_migrations();
        let before: Vec<_> = all.iter().filter(|m| m.version < 9).cloned().collect();
        migrate(&mut conn, &before).unwrap();
        conn.execute(
            "INSERT INTO tenants (id, slug, name, created_at, updated_at)
             VALUES ('00000000-0000-0000-0000-000000000001', 'old', 'Old', 'x', 'x')",
            [],
        )
        .unwrap();
        migrate(&mut conn, all).unwrap();
        let plan: String = conn
            .query_row("SELECT plan FROM subscriptions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(plan, "unlimited");
    }

    /// 0010 gives the built-in plans rates only while their limits are 0009's: a plan whose
    /// limits an operator changed gets none; one written back with the same values (keys in
    /// another order, as an edit writes them) still gets them.
    #[test]
    fn plan_rates_go_only_to_builtin_plans_still_as_shipped() {
        let mut conn = Connection::open_in_memory().unwrap();
        let all = central_migrations();
        let before: Vec<_> = all.iter().filter(|m| m.version < 10).cloned().collect();
        migrate(&mut conn, &before).unwrap();
        // `team` rewritten as an edit writes it (keys sorted), values unchanged; `free` edited.
        conn.execute_batch(
            r#"UPDATE plans SET limits = '{"chats":100,"members":25,"messages_per_day":20000,"orders":10000,"webhook_endpoints":5}' WHERE slug = 'team';
               UPDATE plans SET limits = json_set(limits, '$.orders', 200) WHERE slug = 'free';"#,
        )
        .unwrap();
        migrate(&mut conn, all).unwrap();
        let rates = |slug: &str| {
            let limits: String = conn
                .query_row("SELECT limits FROM plans WHERE slug = ?1", [slug], |r| {
                    r.get(0)
                })
                .unwrap();
            let limits: std::collections::BTreeMap<String, i64> =
                serde_json::from_str(&limits).unwrap();
            (
                PlanRates::of(&limits),
                limits.contains_key(TENANT_RATE_LIMIT) || limits.contains_key(MEMBER_RATE_LIMIT),
            )
        };
        assert_eq!(rates("free"), (PlanRates::default(), false));
        assert_eq!(
            rates("team"),
            (
                PlanRates {
                    tenant_per_min: Some(3000),
                    member_per_min: Some(600),
                },
                true
            )
        );
        assert_eq!(rates("unlimited"), (PlanRates::default(), false));
    }
}
