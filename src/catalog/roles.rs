//! Roles and memberships: each tenant's roles (four built-in, read-only; custom ones the
//! tenant manages) and which users belong to which tenant with which role. Reads go to the
//! database every time, so a change is in effect for the very next request.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;

use super::identity::{user_exists, IdentityError};
use super::permissions::{
    parse_stored, permissions_json, validate_permissions, validate_role_name, PermissionError,
    ADMIN_ROLE,
};
use super::{tenant_exists, Catalog, TenantStatus};
use crate::args;
use crate::db;
use crate::store::{RowRef, Sql, StoreError};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Role {
    pub id: i64,
    pub tenant_id: String,
    pub name: String,
    pub builtin: bool,
    /// Stored as `*` (the built-in admin): every permission, including ones added later.
    pub all_permissions: bool,
    /// Expanded: for an all-permissions role, the whole current list.
    pub permissions: BTreeSet<String>,
    pub member_count: u64,
    /// RFC 3339 UTC.
    pub created_at: String,
    pub updated_at: String,
}

/// Fields left `None` keep their value.
#[derive(Clone, Debug, Default)]
pub struct RoleUpdate {
    pub name: Option<String>,
    pub permissions: Option<Vec<String>>,
}

/// A user's standing in one tenant, as checked on every request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub user_id: i64,
    pub tenant_id: String,
    pub role_id: i64,
    pub role: String,
    pub all_permissions: bool,
    /// Expanded (see [`Role::permissions`]). Shared: every workspace read hands it on.
    pub permissions: Arc<BTreeSet<String>>,
    pub joined_at: String,
    /// `all_permissions` and `permissions` as one text, made once: see [`Membership::scope`].
    #[serde(skip)]
    scope: String,
}

impl Membership {
    pub fn can(&self, permission: &str) -> bool {
        self.permissions.contains(permission)
    }

    /// Everything of the membership that shapes what the member may see, as text: two members
    /// with the same scope see the same. A cache keys answers by it on every read.
    pub fn scope(&self) -> &str {
        &self.scope
    }
}

fn scope_text(all_permissions: bool, permissions: &BTreeSet<String>) -> String {
    // Permission names contain no ',' or newline.
    let mut text = String::from(if all_permissions { "all\n" } else { "some\n" });
    for p in permissions {
        text.push_str(p);
        text.push(',');
    }
    text
}

/// One of a user's tenants, for a tenant picker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TenantMembership {
    pub tenant_id: String,
    pub slug: String,
    pub name: String,
    /// Active or suspended; deleted tenants are left out.
    pub status: TenantStatus,
    pub role: String,
    pub all_permissions: bool,
    pub permissions: BTreeSet<String>,
    pub joined_at: String,
}

/// Which of a user's memberships to read: see [`Catalog::memberships_page`].
#[derive(Clone, Debug, Default)]
pub struct MembershipPage {
    /// Only this tenant's (a session bound to one tenant sees no other).
    pub tenant_id: Option<String>,
    /// The (name, slug) of the last tenant of the previous page.
    pub after: Option<(String, String)>,
    /// `None`: all of them.
    pub limit: Option<usize>,
}

/// The public part of a user, as other members see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberUser {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub surname: String,
    pub photo_url: Option<String>,
    pub disabled: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Member {
    pub user: MemberUser,
    pub role: String,
    pub joined_at: String,
}

impl From<PermissionError> for IdentityError {
    fn from(e: PermissionError) -> Self {
        match e {
            PermissionError::BadRoleName => IdentityError::invalid(
                "name",
                "must be 1 to 50 characters of a-z, 0-9, '_' and '-'",
            ),
            PermissionError::Unknown(p) => IdentityError::InvalidPermission(p),
        }
    }
}

fn corrupt_role(id: i64, message: String) -> IdentityError {
    IdentityError::Corrupt {
        table: "roles",
        id: id.to_string(),
        message,
    }
}

/// (all, expanded) from a stored list, or `Corrupt` naming the role.
fn stored(role_id: i64, json: &str) -> Result<(bool, BTreeSet<String>), IdentityError> {
    parse_stored(json).map_err(|m| corrupt_role(role_id, m))
}

const ROLE_SELECT: &str = "SELECT r.id, r.tenant_id, r.name, r.builtin, r.permissions,
        (SELECT count(*) FROM memberships m WHERE m.role_id = r.id),
        r.created_at, r.updated_at
     FROM roles r";

/// The outer error is the store's; the inner one a row the schema should have prevented.
fn role_from_row(row: &dyn RowRef) -> Result<Result<Role, IdentityError>, StoreError> {
    let id: i64 = row.get(0)?;
    let json: String = row.get(4)?;
    let (all_permissions, permissions) = match stored(id, &json) {
        Ok(stored) => stored,
        Err(e) => return Ok(Err(e)),
    };
    let members: i64 = row.get(5)?;
    Ok(Ok(Role {
        id,
        tenant_id: row.get(1)?,
        name: row.get(2)?,
        builtin: row.get(3)?,
        all_permissions,
        permissions,
        member_count: members.max(0) as u64,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
    }))
}

fn load_role(db: &dyn Sql, tenant_id: &str, name: &str) -> Result<Option<Role>, IdentityError> {
    db.query_row(
        &format!("{ROLE_SELECT} WHERE r.tenant_id = ?1 AND r.name = ?2"),
        args![tenant_id, name],
        role_from_row,
    )?
    .transpose()
}

/// (id, builtin) of a tenant's role by name.
pub(super) fn role_ref(
    db: &dyn Sql,
    tenant_id: &str,
    name: &str,
) -> Result<(i64, bool), IdentityError> {
    db.query_row(
        "SELECT id, builtin FROM roles WHERE tenant_id = ?1 AND name = ?2",
        args![tenant_id, name],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?
    .ok_or_else(|| IdentityError::RoleNotFound(name.to_string()))
}

fn role_name_taken(db: &dyn Sql, tenant_id: &str, name: &str) -> Result<bool, StoreError> {
    db.query_one(
        "SELECT EXISTS (SELECT 1 FROM roles WHERE tenant_id = ?1 AND name = ?2)",
        args![tenant_id, name],
        |row| row.get(0),
    )
}

pub(super) fn require_tenant(db: &dyn Sql, tenant_id: &str) -> Result<(), IdentityError> {
    if tenant_exists(db, tenant_id)? {
        Ok(())
    } else {
        Err(IdentityError::TenantNotFound(tenant_id.to_string()))
    }
}

const MEMBERSHIP_SELECT: &str = "SELECT m.user_id, m.tenant_id, m.role_id, r.name, r.permissions,
        m.created_at
     FROM memberships m JOIN roles r ON r.id = m.role_id";

fn load_membership(
    db: &dyn Sql,
    user_id: i64,
    tenant_id: &str,
) -> Result<Option<Membership>, IdentityError> {
    // The primary key finds the row, the role's primary key its permissions: two index
    // lookups, no cache to go stale.
    let row = db.query_row(
        &format!("{MEMBERSHIP_SELECT} WHERE m.user_id = ?1 AND m.tenant_id = ?2"),
        args![user_id, tenant_id],
        |row| {
            Ok((
                row.get::<i64>(0)?,
                row.get::<String>(1)?,
                row.get::<i64>(2)?,
                row.get::<String>(3)?,
                row.get::<String>(4)?,
                row.get::<String>(5)?,
            ))
        },
    )?;
    let Some((user_id, tenant_id, role_id, role, json, joined_at)) = row else {
        return Ok(None);
    };
    let (all_permissions, permissions) = stored(role_id, &json)?;
    Ok(Some(Membership {
        user_id,
        tenant_id,
        role_id,
        role,
        scope: scope_text(all_permissions, &permissions),
        all_permissions,
        permissions: Arc::new(permissions),
        joined_at,
    }))
}

/// The role id of a user's membership, if any.
fn member_role(db: &dyn Sql, tenant_id: &str, user_id: i64) -> Result<Option<i64>, StoreError> {
    db.query_row(
        "SELECT role_id FROM memberships WHERE user_id = ?1 AND tenant_id = ?2",
        args![user_id, tenant_id],
        |row| row.get(0),
    )
}

/// Refuses to take the built-in admin role away from the tenant's only admin: nobody inside the
/// tenant could manage it afterwards. Checked in the writing transaction, so two admins
/// demoting each other at once cannot both succeed.
fn keep_an_admin(db: &dyn Sql, tenant_id: &str, leaving_role: i64) -> Result<(), IdentityError> {
    let (admin_id, _) = role_ref(db, tenant_id, ADMIN_ROLE)?;
    if leaving_role != admin_id {
        return Ok(());
    }
    let admins: i64 = db.query_one(
        "SELECT count(*) FROM memberships WHERE role_id = ?1",
        args![admin_id],
        |row| row.get(0),
    )?;
    if admins <= 1 {
        return Err(IdentityError::LastAdmin);
    }
    Ok(())
}

/// Makes a user a member with a role of the tenant (by id), in the caller's transaction.
pub(super) fn insert_membership(
    db: &dyn Sql,
    tenant_id: &str,
    user_id: i64,
    role_id: i64,
) -> Result<Membership, IdentityError> {
    if !user_exists(db, user_id)? {
        return Err(IdentityError::UserNotFound);
    }
    if member_role(db, tenant_id, user_id)?.is_some() {
        return Err(IdentityError::AlreadyAMember);
    }
    // In the insert's own transaction: two invitations accepted at once cannot both pass.
    if let Some((limit, usage)) = super::plans::members_over_limit(db, tenant_id)? {
        return Err(IdentityError::Quota { limit, usage });
    }
    db.execute(
        "INSERT INTO memberships (user_id, tenant_id, role_id, created_at)
         VALUES (?1, ?2, ?3, ?4)",
        args![user_id, tenant_id, role_id, db::now_rfc3339()],
    )?;
    load_membership(db, user_id, tenant_id)?.ok_or(IdentityError::NotAMember)
}

impl Catalog {
    /// A tenant's roles in creation order (the built-ins first).
    pub fn roles(&self, tenant_id: &str) -> Result<Vec<Role>, IdentityError> {
        self.read(|db| {
            require_tenant(db, tenant_id)?;
            db.query_map(
                &format!("{ROLE_SELECT} WHERE r.tenant_id = ?1 ORDER BY r.id"),
                args![tenant_id],
                role_from_row,
            )?
            .into_iter()
            .collect()
        })
    }

    pub fn role(&self, tenant_id: &str, name: &str) -> Result<Option<Role>, IdentityError> {
        self.read(|db| load_role(db, tenant_id, name))
    }

    /// A custom role. `*` is not a permission a custom role can have.
    pub fn create_role<S: AsRef<str>>(
        &self,
        tenant_id: &str,
        name: &str,
        permissions: &[S],
    ) -> Result<Role, IdentityError> {
        validate_role_name(name)?;
        let permissions = validate_permissions(permissions)?;
        self.write_sql(|db| {
            require_tenant(db, tenant_id)?;
            if role_name_taken(db, tenant_id, name)? {
                return Err(IdentityError::RoleTaken(name.to_string()));
            }
            db.execute(
                "INSERT INTO roles (tenant_id, name, permissions, builtin, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 0, ?4, ?4)",
                args![
                    tenant_id,
                    name,
                    permissions_json(&permissions),
                    db::now_rfc3339()
                ],
            )?;
            load_role(db, tenant_id, name)?.ok_or_else(|| IdentityError::RoleNotFound(name.into()))
        })
    }

    /// Renames a custom role and/or replaces its permissions. Built-ins are read-only.
    pub fn update_role(
        &self,
        tenant_id: &str,
        name: &str,
        update: &RoleUpdate,
    ) -> Result<Role, IdentityError> {
        if let Some(new_name) = &update.name {
            validate_role_name(new_name)?;
        }
        let permissions = match &update.permissions {
            Some(list) => Some(permissions_json(&validate_permissions(list)?)),
            None => None,
        };
        self.write_sql(|db| {
            let (id, builtin) = role_ref(db, tenant_id, name)?;
            if builtin {
                return Err(IdentityError::RoleBuiltin(name.to_string()));
            }
            let new_name = update.name.as_deref().unwrap_or(name);
            if new_name != name && role_name_taken(db, tenant_id, new_name)? {
                return Err(IdentityError::RoleTaken(new_name.to_string()));
            }
            db.execute(
                "UPDATE roles SET name = ?2, permissions = COALESCE(?3, permissions),
                                  updated_at = ?4
                 WHERE id = ?1",
                args![id, new_name, permissions, db::now_rfc3339()],
            )?;
            load_role(db, tenant_id, new_name)?
                .ok_or_else(|| IdentityError::RoleNotFound(new_name.into()))
        })
    }

    /// Deletes a custom role nobody holds.
    pub fn delete_role(&self, tenant_id: &str, name: &str) -> Result<(), IdentityError> {
        self.write_sql(|db| {
            let (id, builtin) = role_ref(db, tenant_id, name)?;
            if builtin {
                return Err(IdentityError::RoleBuiltin(name.to_string()));
            }
            let in_use: bool = db.query_one(
                "SELECT EXISTS (SELECT 1 FROM memberships WHERE role_id = ?1)",
                args![id],
                |row| row.get(0),
            )?;
            if in_use {
                return Err(IdentityError::RoleInUse(name.to_string()));
            }
            db.execute("DELETE FROM roles WHERE id = ?1", args![id])?;
            Ok(())
        })
    }

    /// The user's role and permissions in the tenant, read now (one indexed query).
    pub fn membership(
        &self,
        user_id: i64,
        tenant_id: &str,
    ) -> Result<Option<Arc<Membership>>, IdentityError> {
        self.snapshot()?;
        self.cached_membership(user_id, tenant_id)
    }

    /// Shared, not copied: a role's permission set is read on every tenant request.
    pub(crate) fn cached_membership(
        &self,
        user_id: i64,
        tenant_id: &str,
    ) -> Result<Option<Arc<Membership>>, IdentityError> {
        let load = || self.read(|db| Ok(load_membership(db, user_id, tenant_id)?.map(Arc::new)));
        // Kept by the id's bits only for the catalog's own spelling of it (hyphenated, lower
        // case): another spelling of the same UUID finds no row, and must not keep that answer
        // for the real one.
        let canonical = tenant_id.len() == uuid::fmt::Hyphenated::LENGTH
            && !tenant_id.bytes().any(|b| b.is_ascii_uppercase());
        match uuid::Uuid::try_parse(tenant_id) {
            Ok(id) if canonical => self.cached(|c| &mut c.memberships, &(user_id, id), load),
            _ => load(),
        }
    }

    /// Every tenant the user belongs to, deleted tenants left out, by tenant name.
    pub fn memberships_of(&self, user_id: i64) -> Result<Vec<TenantMembership>, IdentityError> {
        self.memberships_page(user_id, &MembershipPage::default())
    }

    /// One page of [`Catalog::memberships_of`]: by tenant name then slug (unique), after the
    /// page's `after` key, at most `limit` of them. The sort keeps at most `limit` rows, so a
    /// page costs its own size whatever the user's count of memberships.
    pub fn memberships_page(
        &self,
        user_id: i64,
        page: &MembershipPage,
    ) -> Result<Vec<TenantMembership>, IdentityError> {
        let sql = "SELECT t.id, t.slug, t.name, t.status, r.id, r.name, r.permissions, m.created_at
             FROM memberships m
             JOIN tenants t ON t.id = m.tenant_id
             JOIN roles r ON r.id = m.role_id
             WHERE m.user_id = ?1 AND t.status <> 'deleted'
               AND (?2 IS NULL OR m.tenant_id = ?2)
               AND (?3 IS NULL OR (t.name, t.slug) > (?3, ?4))
             ORDER BY t.name, t.slug
             LIMIT ?5";
        let (after_name, after_slug) = page.after.clone().unzip();
        let limit = page
            .limit
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let rows = self.read(|db| {
            Ok::<_, IdentityError>(db.query_map(
                sql,
                args![
                    user_id,
                    page.tenant_id.as_deref(),
                    after_name,
                    after_slug,
                    limit
                ],
                |row| {
                    Ok((
                        row.get::<String>(0)?,
                        row.get::<String>(1)?,
                        row.get::<String>(2)?,
                        row.get::<String>(3)?,
                        row.get::<i64>(4)?,
                        row.get::<String>(5)?,
                        row.get::<String>(6)?,
                        row.get::<String>(7)?,
                    ))
                },
            )?)
        })?;
        rows.into_iter()
            .map(
                |(tenant_id, slug, name, status, role_id, role, json, joined_at)| {
                    let status =
                        TenantStatus::parse(&status).ok_or_else(|| IdentityError::Corrupt {
                            table: "tenants",
                            id: tenant_id.clone(),
                            message: format!("unknown status {status:?}"),
                        })?;
                    let (all_permissions, permissions) = stored(role_id, &json)?;
                    Ok(TenantMembership {
                        tenant_id,
                        slug,
                        name,
                        status,
                        role,
                        all_permissions,
                        permissions,
                        joined_at,
                    })
                },
            )
            .collect()
    }

    /// The tenant's members by email.
    pub fn members(&self, tenant_id: &str) -> Result<Vec<Member>, IdentityError> {
        self.read(|db| {
            require_tenant(db, tenant_id)?;
            Ok(db.query_map(
                "SELECT u.id, u.email, u.name, u.surname, u.photo_url, u.disabled, r.name,
                        m.created_at
                 FROM memberships m
                 JOIN users u ON u.id = m.user_id
                 JOIN roles r ON r.id = m.role_id
                 WHERE m.tenant_id = ?1
                 ORDER BY u.email",
                args![tenant_id],
                |row| {
                    Ok(Member {
                        user: MemberUser {
                            id: row.get(0)?,
                            email: row.get(1)?,
                            name: row.get(2)?,
                            surname: row.get(3)?,
                            photo_url: row.get(4)?,
                            disabled: row.get(5)?,
                        },
                        role: row.get(6)?,
                        joined_at: row.get(7)?,
                    })
                },
            )?)
        })
    }

    pub fn add_member(
        &self,
        tenant_id: &str,
        user_id: i64,
        role_name: &str,
    ) -> Result<Membership, IdentityError> {
        self.write_sql(|db| {
            require_tenant(db, tenant_id)?;
            let (role_id, _) = role_ref(db, tenant_id, role_name)?;
            insert_membership(db, tenant_id, user_id, role_id)
        })
    }

    /// Gives a member another role; refused if it would leave the tenant without an admin.
    pub fn set_member_role(
        &self,
        tenant_id: &str,
        user_id: i64,
        role_name: &str,
    ) -> Result<Membership, IdentityError> {
        self.write_sql(|db| {
            let current = member_role(db, tenant_id, user_id)?.ok_or(IdentityError::NotAMember)?;
            let (role_id, _) = role_ref(db, tenant_id, role_name)?;
            if role_id != current {
                keep_an_admin(db, tenant_id, current)?;
                db.execute(
                    "UPDATE memberships SET role_id = ?3 WHERE user_id = ?1 AND tenant_id = ?2",
                    args![user_id, tenant_id, role_id],
                )?;
            }
            load_membership(db, user_id, tenant_id)?.ok_or(IdentityError::NotAMember)
        })
    }

    /// Ends a user's account at their own request, in one transaction: every membership goes
    /// (refused with `LastAdmin` while any tenant would be left without an admin), every
    /// session and token is revoked, and the row is anonymised rather than removed, so that
    /// what they wrote in tenants' files keeps an author: "Deleted user", an email of
    /// `deleted-<id>@deleted.invalid`, no photo, a password hash nothing matches, disabled.
    /// Returns the tenants they were a member of.
    pub fn erase_user(&self, user_id: i64) -> Result<Vec<String>, IdentityError> {
        self.write_sql(|db| {
            if !user_exists(db, user_id)? {
                return Err(IdentityError::UserNotFound);
            }
            let memberships: Vec<(String, i64)> = db.query_map(
                "SELECT tenant_id, role_id FROM memberships WHERE user_id = ?1",
                args![user_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            for (tenant_id, role_id) in &memberships {
                keep_an_admin(db, tenant_id, *role_id)?;
            }
            db.execute("DELETE FROM memberships WHERE user_id = ?1", args![user_id])?;
            db.execute(
                "UPDATE sessions SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
                args![user_id, super::sessions::unix_now()],
            )?;
            db.execute(
                "UPDATE users SET email = ?2, name = 'Deleted', surname = 'user', photo_url = NULL,
                                  password_hash = '!deleted', disabled = 1, updated_at = ?3
                 WHERE id = ?1",
                args![
                    user_id,
                    format!("deleted-{user_id}@deleted.invalid"),
                    db::now_rfc3339()
                ],
            )?;
            Ok(memberships.into_iter().map(|(t, _)| t).collect())
        })
    }

    /// Removes a member; refused for the tenant's last admin. The user's credentials bound to
    /// the tenant (personal tokens, impersonation sessions and tickets) are revoked with it, so
    /// that taking the user back in does not bring old keys back.
    pub fn remove_member(&self, tenant_id: &str, user_id: i64) -> Result<(), IdentityError> {
        self.write_sql(|db| {
            let current = member_role(db, tenant_id, user_id)?.ok_or(IdentityError::NotAMember)?;
            keep_an_admin(db, tenant_id, current)?;
            db.execute(
                "DELETE FROM memberships WHERE user_id = ?1 AND tenant_id = ?2",
                args![user_id, tenant_id],
            )?;
            db.execute(
                "UPDATE sessions SET revoked_at = ?3
                 WHERE user_id = ?1 AND tenant_id = ?2 AND revoked_at IS NULL",
                args![user_id, tenant_id, super::sessions::unix_now()],
            )?;
            Ok(())
        })
    }
}
