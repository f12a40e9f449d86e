//! The fixed list of permissions, the built-in roles every tenant gets, and the rules for role
//! names and permission lists. Roles store their permissions as a JSON array; the built-in admin
//! stores `["*"]` so that a permission added in a later version is included without a migration.

use std::collections::BTreeSet;

use crate::args;
use crate::store::{Sql, StoreError};

/// Every permission a role can hold. Adding one here gives it to `admin` at once; other roles
/// only get it when a tenant (or a migration, for built-ins) says so.
pub const PERMISSIONS: [&str; 14] = [
    "chats_view_all",
    "chats_create",
    "orders_view",
    "orders_view_all",
    "orders_simple_view",
    "orders_simple_view_all",
    "orders_create",
    "orders_edit",
    "orders_delete",
    "members_view",
    "members_manage",
    "roles_manage",
    "settings_manage",
    "audit_view",
];

/// Stored instead of a list: every permission, present and future.
pub const ALL_PERMISSIONS: &str = "*";

/// The built-in role with every permission. Membership rules treat it specially (a tenant
/// never loses its last admin).
pub const ADMIN_ROLE: &str = "admin";

pub const MAX_ROLE_NAME_LEN: usize = 50;

/// A role every tenant has. Built-ins are read-only: they cannot be renamed, edited or deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuiltinRole {
    pub name: &'static str,
    /// `["*"]` for admin.
    pub permissions: &'static [&'static str],
}

/// Also seeded by `schema/central/0002_identity.sql` for tenants older than that migration; a
/// test checks the two agree.
pub const BUILTIN_ROLES: [BuiltinRole; 4] = [
    BuiltinRole {
        name: ADMIN_ROLE,
        permissions: &[ALL_PERMISSIONS],
    },
    BuiltinRole {
        name: "manager",
        permissions: &[
            "chats_view_all",
            "chats_create",
            "orders_view_all",
            "orders_create",
            "orders_edit",
            "members_view",
            "audit_view",
        ],
    },
    BuiltinRole {
        name: "agent",
        permissions: &[
            "chats_create",
            "orders_view",
            "orders_create",
            "orders_edit",
            "members_view",
        ],
    },
    BuiltinRole {
        name: "viewer",
        permissions: &["orders_simple_view_all"],
    },
];

pub fn is_permission(name: &str) -> bool {
    PERMISSIONS.contains(&name)
}

/// Why a role name or permission list was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PermissionError {
    /// Not `[a-z0-9_-]{1,50}`.
    BadRoleName,
    /// Not in [`PERMISSIONS`] (`*` included: only the built-in admin has it).
    Unknown(String),
}

/// `[a-z0-9_-]{1,50}`.
pub fn validate_role_name(name: &str) -> Result<(), PermissionError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ROLE_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(PermissionError::BadRoleName)
    }
}

/// The permissions of a custom role, checked against the list and de-duplicated.
pub fn validate_permissions<S: AsRef<str>>(
    permissions: &[S],
) -> Result<BTreeSet<String>, PermissionError> {
    let mut out = BTreeSet::new();
    for p in permissions {
        let p = p.as_ref();
        if !is_permission(p) {
            // Cut so that an error never carries a huge input along.
            return Err(PermissionError::Unknown(p.chars().take(64).collect()));
        }
        out.insert(p.to_string());
    }
    Ok(out)
}

/// The stored form: a sorted JSON array.
pub(crate) fn permissions_json(permissions: &BTreeSet<String>) -> String {
    // Serialising a set of strings cannot fail.
    serde_json::to_string(permissions).unwrap_or_else(|_| "[]".to_string())
}

/// A stored permission list as (everything?, expanded set). `*` expands to the whole current
/// list. Names this binary does not know (a permission dropped in a later version, a row edited
/// by hand) are left out rather than failing every request of the role's members.
pub(crate) fn parse_stored(json: &str) -> Result<(bool, BTreeSet<String>), String> {
    let names: Vec<String> =
        serde_json::from_str(json).map_err(|e| format!("permissions are not a JSON array: {e}"))?;
    if names.iter().any(|n| n == ALL_PERMISSIONS) {
        return Ok((true, PERMISSIONS.iter().map(|p| p.to_string()).collect()));
    }
    Ok((
        false,
        names.into_iter().filter(|n| is_permission(n)).collect(),
    ))
}

/// Inserts the built-in roles for a new tenant, inside the caller's transaction.
pub(crate) fn seed_builtin_roles(
    db: &dyn Sql,
    tenant_id: &str,
    now: &str,
) -> Result<(), StoreError> {
    for role in &BUILTIN_ROLES {
        let set: BTreeSet<String> = role.permissions.iter().map(|p| p.to_string()).collect();
        db.execute(
            "INSERT INTO roles (tenant_id, name, permissions, builtin, created_at, updated_at)
             VALUES (?1, ?2, ?3, 1, ?4, ?4)",
            args![tenant_id, role.name, permissions_json(&set), now],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_roles_use_known_permissions() {
        for role in &BUILTIN_ROLES {
            validate_role_name(role.name).unwrap();
            for p in role.permissions {
                assert!(
                    *p == ALL_PERMISSIONS && role.name == ADMIN_ROLE || is_permission(p),
                    "{} has {p}",
                    role.name
                );
            }
        }
        let unique: BTreeSet<&str> = PERMISSIONS.iter().copied().collect();
        assert_eq!(unique.len(), PERMISSIONS.len());
    }

    #[test]
    fn role_names() {
        for good in ["a", "sales-team", "level_2", &"x".repeat(50)] {
            assert_eq!(validate_role_name(good), Ok(()), "{good}");
        }
        for bad in ["", "Sales", "a b", "é", "a.b", "*", &"x".repeat(51)] {
            assert!(validate_role_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn permission_lists() {
        let set = validate_permissions(&["orders_view", "orders_view", "audit_view"]).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(
            validate_permissions(&["*"]),
            Err(PermissionError::Unknown("*".into()))
        );
        assert!(validate_permissions(&["orders_fly"]).is_err());
        assert!(validate_permissions::<&str>(&[]).unwrap().is_empty());

        let (all, set) = parse_stored(r#"["*"]"#).unwrap();
        assert!(all);
        assert_eq!(set.len(), PERMISSIONS.len());
        let (all, set) = parse_stored(r#"["orders_view","gone_since_v2"]"#).unwrap();
        assert!(!all);
        assert_eq!(set, BTreeSet::from(["orders_view".to_string()]));
        assert!(parse_stored("{").is_err());
    }
}
