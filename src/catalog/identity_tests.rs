//! Identity tests against real catalog files in temporary directories.

use std::collections::BTreeSet;
use std::sync::Barrier;
use std::thread;

use rusqlite::Connection;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::*;
use crate::test_kit::{Setup, HASH, NOW};

/// The identity tests' own fixtures on a [`Setup`].
trait IdentitySetup {
    fn tenant(&self, slug: &str) -> String;
    fn user(&self, email: &str) -> User;
    fn admin(&self, email: &str) -> SystemAdmin;
}

impl IdentitySetup for Setup {
    fn tenant(&self, slug: &str) -> String {
        self.add_tenant(slug, &[]).id.clone()
    }

    fn user(&self, email: &str) -> User {
        self.catalog
            .create_user(&NewUser {
                email: email.to_string(),
                name: "Ann".to_string(),
                surname: "Smith".to_string(),
                photo_url: None,
                password_hash: HASH.to_string(),
            })
            .unwrap()
    }

    fn admin(&self, email: &str) -> SystemAdmin {
        self.catalog.create_admin(email, HASH).unwrap()
    }
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn field_of(e: IdentityError) -> &'static str {
    match e {
        IdentityError::Validation { field, .. } => field,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn emails_are_unique_whatever_their_case() {
    let s = Setup::new();
    let ann = s.user("  Ann.Smith@Example.COM ");
    assert_eq!(ann.email, "ann.smith@example.com");
    assert_eq!(ann.name, "Ann");
    assert!(!ann.disabled);

    for again in [
        "ann.smith@example.com",
        "ANN.SMITH@EXAMPLE.COM",
        " Ann.Smith@example.com",
    ] {
        let err = s
            .catalog
            .create_user(&NewUser {
                email: again.to_string(),
                name: "Other".to_string(),
                password_hash: HASH.to_string(),
                ..NewUser::default()
            })
            .unwrap_err();
        assert!(matches!(err, IdentityError::EmailTaken), "{again}: {err:?}");
    }
    let found = s.catalog.user_by_email("ANN.smith@example.com").unwrap();
    assert_eq!(found.map(|u| u.id), Some(ann.id));
    assert_eq!(
        s.catalog.user_by_id(ann.id).unwrap().unwrap().email,
        ann.email
    );
    assert!(s
        .catalog
        .user_by_email("nobody@example.com")
        .unwrap()
        .is_none());
    assert!(s.catalog.user_by_email("not an email").unwrap().is_none());

    // The schema refuses a mixed-case variant that bypassed the code.
    let raw = s.outside().execute(
        "INSERT INTO users (email, name, surname, password_hash, created_at, updated_at)
         VALUES ('ANN.SMITH@example.com', 'x', 'x', 'x', 'x', 'x')",
        [],
    );
    assert!(raw.is_err());
    let raw = s.outside().execute(
        "INSERT INTO users (email, name, surname, password_hash, created_at, updated_at)
         VALUES ('ann.smith@example.com', 'x', 'x', 'x', 'x', 'x')",
        [],
    );
    assert!(raw.is_err());

    // System admins are a separate table with the same rule.
    let admin = s.admin("Root@Example.com");
    assert_eq!(admin.email, "root@example.com");
    assert!(matches!(
        s.catalog.create_admin("ROOT@example.com", HASH),
        Err(IdentityError::EmailTaken)
    ));
    // A user and an admin may share an email.
    s.admin("ann.smith@example.com");
}

#[test]
fn user_fields_are_validated() {
    let s = Setup::new();
    let new = |email: &str, name: &str, photo: Option<&str>, hash: &str| NewUser {
        email: email.to_string(),
        name: name.to_string(),
        surname: String::new(),
        photo_url: photo.map(str::to_string),
        password_hash: hash.to_string(),
    };
    let long_email = format!("{}@example.com", "a".repeat(250));
    for (user, field) in [
        (new("", "Ann", None, HASH), "email"),
        (new("ann", "Ann", None, HASH), "email"),
        (new("@example.com", "Ann", None, HASH), "email"),
        (new("ann@", "Ann", None, HASH), "email"),
        (new("a@b@example.com", "Ann", None, HASH), "email"),
        (new("ann smith@example.com", "Ann", None, HASH), "email"),
        (new("ann\0@example.com", "Ann", None, HASH), "email"),
        (new(&long_email, "Ann", None, HASH), "email"),
        (new("ann@example.com", "  ", None, HASH), "name"),
        (new("ann@example.com", "A\nB", None, HASH), "name"),
        (new("ann@example.com", &"é".repeat(101), None, HASH), "name"),
        (
            new("ann@example.com", "Ann", Some("javascript:alert(1)"), HASH),
            "photo_url",
        ),
        (
            new("ann@example.com", "Ann", Some("https://"), HASH),
            "photo_url",
        ),
        (
            new("ann@example.com", "Ann", Some("https://x.test/a b"), HASH),
            "photo_url",
        ),
        (
            new("ann@example.com", "Ann", Some("https://x.test/\"><x"), HASH),
            "photo_url",
        ),
        (
            new("ann@example.com", "Ann", None, "hunter2"),
            "password_hash",
        ),
        (new("ann@example.com", "Ann", None, ""), "password_hash"),
    ] {
        let err = s.catalog.create_user(&user).unwrap_err();
        assert_eq!(field_of(err), field, "{user:?}");
    }
    let ann = s
        .catalog
        .create_user(&new(
            "ann@example.com",
            " Ann ",
            Some(" https://cdn.test/a.png "),
            HASH,
        ))
        .unwrap();
    assert_eq!(ann.name, "Ann");
    assert_eq!(ann.surname, "");
    assert_eq!(ann.photo_url.as_deref(), Some("https://cdn.test/a.png"));
    // The hash is never serialised.
    let json = serde_json::to_value(&ann).unwrap();
    assert!(json.get("password_hash").is_none());
    assert!(!format!("{ann:?}").contains("argon2"));

    let updated = s
        .catalog
        .update_profile(
            ann.id,
            &ProfileUpdate {
                surname: Some("Smith".into()),
                ..ProfileUpdate::default()
            },
        )
        .unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.surname.as_str()),
        ("Ann", "Smith")
    );
    assert_eq!(updated.photo_url, ann.photo_url, "untouched when not given");
    let updated = s
        .catalog
        .update_profile(
            ann.id,
            &ProfileUpdate {
                name: Some("Anna".into()),
                photo_url: Some(String::new()),
                ..ProfileUpdate::default()
            },
        )
        .unwrap();
    assert_eq!(updated.name, "Anna");
    assert_eq!(updated.photo_url, None, "empty clears the photo");
    let err = s
        .catalog
        .update_profile(
            ann.id,
            &ProfileUpdate {
                photo_url: Some("ftp://x.test/a.png".into()),
                ..ProfileUpdate::default()
            },
        )
        .unwrap_err();
    assert_eq!(field_of(err), "photo_url");
    assert!(matches!(
        s.catalog.update_profile(9999, &ProfileUpdate::default()),
        Err(IdentityError::UserNotFound)
    ));

    let new_hash = "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXJzYWx0$bmV3aGFzaA";
    s.catalog.set_password_hash(ann.id, new_hash).unwrap();
    assert_eq!(
        s.catalog.user_by_id(ann.id).unwrap().unwrap().password_hash,
        new_hash
    );
    assert!(matches!(
        s.catalog.set_password_hash(ann.id, "plain"),
        Err(IdentityError::Validation { .. })
    ));
    assert!(matches!(
        s.catalog.set_password_hash(9999, HASH),
        Err(IdentityError::UserNotFound)
    ));
    s.catalog.set_disabled(ann.id, true).unwrap();
    assert!(s.catalog.user_by_id(ann.id).unwrap().unwrap().disabled);
    s.catalog.set_disabled(ann.id, false).unwrap();
    assert!(!s.catalog.user_by_id(ann.id).unwrap().unwrap().disabled);
}

#[test]
fn system_admins_and_totp() {
    let s = Setup::new();
    assert_eq!(s.catalog.admin_count().unwrap(), 0);
    let root = s.admin("root@example.com");
    assert!(!root.totp_enabled);
    assert_eq!(s.catalog.admin_count().unwrap(), 1);

    assert_eq!(
        field_of(s.catalog.set_admin_totp(root.id, None, true).unwrap_err()),
        "totp_secret"
    );
    s.catalog
        .set_admin_totp(root.id, Some("JBSWY3DPEHPK3PXP"), false)
        .unwrap();
    let pending = s.catalog.admin_by_id(root.id).unwrap().unwrap();
    assert_eq!(pending.totp_secret.as_deref(), Some("JBSWY3DPEHPK3PXP"));
    assert!(!pending.totp_enabled);
    s.catalog
        .set_admin_totp(root.id, Some("JBSWY3DPEHPK3PXP"), true)
        .unwrap();
    let on = s
        .catalog
        .admin_by_email("ROOT@example.com")
        .unwrap()
        .unwrap();
    assert!(on.totp_enabled);
    let json = serde_json::to_value(&on).unwrap();
    assert!(json.get("totp_secret").is_none() && json.get("password_hash").is_none());
    s.catalog.set_admin_totp(root.id, None, false).unwrap();
    let off = s.catalog.admin_by_id(root.id).unwrap().unwrap();
    assert_eq!((off.totp_secret, off.totp_enabled), (None, false));

    s.catalog
        .set_admin_password_hash(root.id, "$argon2id$new")
        .unwrap();
    assert_eq!(
        s.catalog
            .admin_by_id(root.id)
            .unwrap()
            .unwrap()
            .password_hash,
        "$argon2id$new"
    );
    assert!(matches!(
        s.catalog.set_admin_totp(999, None, false),
        Err(IdentityError::AdminNotFound)
    ));
    assert!(s
        .catalog
        .admin_by_email("nobody@example.com")
        .unwrap()
        .is_none());
}

#[test]
fn new_tenants_get_the_builtin_roles() {
    let s = Setup::new();
    let acme = s.tenant("acme");
    let roles = s.catalog.roles(&acme).unwrap();
    let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["admin", "manager", "agent", "viewer"]);
    for (role, builtin) in roles.iter().zip(BUILTIN_ROLES.iter()) {
        assert!(role.builtin);
        assert_eq!(role.member_count, 0);
        if role.name == ADMIN_ROLE {
            assert!(role.all_permissions);
            assert_eq!(role.permissions, set(&PERMISSIONS));
        } else {
            assert!(!role.all_permissions);
            assert_eq!(role.permissions, set(builtin.permissions));
        }
    }
    assert_eq!(
        s.catalog
            .role(&acme, "manager")
            .unwrap()
            .unwrap()
            .permissions,
        set(&[
            "chats_view_all",
            "chats_create",
            "orders_view_all",
            "orders_create",
            "orders_edit",
            "members_view",
            "audit_view"
        ])
    );
    // Each tenant has its own.
    let beta = s.tenant("beta");
    assert_eq!(s.catalog.roles(&beta).unwrap().len(), 4);
    assert_eq!(s.count("SELECT count(*) FROM roles"), 8);
    assert!(matches!(
        s.catalog.roles("00000000-0000-4000-8000-000000000000"),
        Err(IdentityError::TenantNotFound(_))
    ));
}

#[test]
fn the_migration_seeds_roles_for_existing_tenants_like_the_code_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(CENTRAL_DB);
    {
        // A catalog made by a binary that only knew migration 0001.
        let mut conn = db::open(&path, DbKind::Catalog, Create::IfMissing).unwrap();
        db::migrate(&mut conn, &db::central_migrations()[..1]).unwrap();
        assert_eq!(db::schema_version(&conn).unwrap(), 1);
        conn.execute(
            "INSERT INTO tenants (id, slug, name, created_at, updated_at)
             VALUES ('00000000-0000-4000-8000-000000000001', 'old', 'Old', 'x', 'x')",
            [],
        )
        .unwrap();
    }
    let catalog = Catalog::open(dir.path(), Create::Never).unwrap();
    assert!(catalog.schema_version().unwrap() >= 2);
    let old = catalog
        .roles("00000000-0000-4000-8000-000000000001")
        .unwrap();
    let new_id = catalog
        .insert_tenant(&Uuid::new_v4(), "fresh", "Fresh", &[])
        .unwrap()
        .id
        .clone();
    let new = catalog.roles(&new_id).unwrap();
    let shape = |roles: &[Role]| -> Vec<(String, bool, bool, BTreeSet<String>)> {
        roles
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    r.builtin,
                    r.all_permissions,
                    r.permissions.clone(),
                )
            })
            .collect()
    };
    assert_eq!(old.len(), BUILTIN_ROLES.len());
    assert_eq!(shape(&old), shape(&new));
    // And the stored text is the same, not only its meaning.
    let conn = Connection::open(&path).unwrap();
    let stored: Vec<(String, String)> = conn
        .prepare(
            "SELECT a.permissions, b.permissions FROM roles a JOIN roles b USING (name)
             WHERE a.tenant_id = '00000000-0000-4000-8000-000000000001' AND b.tenant_id = ?1",
        )
        .unwrap()
        .query_map([&new_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored.len(), 4);
    for (a, b) in stored {
        assert_eq!(a, b);
    }
}

#[test]
fn a_user_can_hold_different_roles_in_different_tenants() {
    let s = Setup::new();
    let (acme, beta, gone) = (s.tenant("acme"), s.tenant("beta"), s.tenant("gone"));
    let ann = s.user("ann@example.com");
    let bob = s.user("bob@example.com");

    let m = s.catalog.add_member(&acme, ann.id, "admin").unwrap();
    assert_eq!(m.role, "admin");
    assert!(m.all_permissions && m.can("roles_manage"));
    s.catalog.add_member(&beta, ann.id, "viewer").unwrap();
    s.catalog.add_member(&gone, ann.id, "agent").unwrap();
    s.catalog.add_member(&acme, bob.id, "agent").unwrap();

    // Another spelling of the id names no tenant, and leaves nothing behind for the real one.
    assert!(s
        .catalog
        .membership(ann.id, &acme.to_uppercase())
        .unwrap()
        .is_none());
    let in_acme = s.catalog.membership(ann.id, &acme).unwrap().unwrap();
    let in_beta = s.catalog.membership(ann.id, &beta).unwrap().unwrap();
    assert_eq!(*in_acme.permissions, set(&PERMISSIONS));
    assert_eq!(in_beta.role, "viewer");
    assert_eq!(*in_beta.permissions, set(&["orders_simple_view_all"]));
    assert!(!in_beta.can("orders_view"));
    assert!(s.catalog.membership(bob.id, &beta).unwrap().is_none());

    s.catalog.set_status(&gone, TenantStatus::Deleted).unwrap();
    s.catalog
        .set_status(&beta, TenantStatus::Suspended)
        .unwrap();
    let mine = s.catalog.memberships_of(ann.id).unwrap();
    let seen: Vec<(&str, &str, TenantStatus)> = mine
        .iter()
        .map(|m| (m.slug.as_str(), m.role.as_str(), m.status))
        .collect();
    assert_eq!(
        seen,
        [
            ("acme", "admin", TenantStatus::Active),
            ("beta", "viewer", TenantStatus::Suspended)
        ]
    );

    let members = s.catalog.members(&acme).unwrap();
    let listed: Vec<(&str, &str)> = members
        .iter()
        .map(|m| (m.user.email.as_str(), m.role.as_str()))
        .collect();
    assert_eq!(
        listed,
        [("ann@example.com", "admin"), ("bob@example.com", "agent")]
    );
    assert_eq!(
        s.catalog
            .role(&acme, "agent")
            .unwrap()
            .unwrap()
            .member_count,
        1
    );

    assert!(matches!(
        s.catalog.add_member(&acme, bob.id, "viewer"),
        Err(IdentityError::AlreadyAMember)
    ));
    assert!(matches!(
        s.catalog.add_member(&acme, 9999, "viewer"),
        Err(IdentityError::UserNotFound)
    ));
    assert!(matches!(
        s.catalog.add_member(&beta, bob.id, "boss"),
        Err(IdentityError::RoleNotFound(_))
    ));
    assert!(matches!(
        s.catalog
            .add_member("00000000-0000-4000-8000-000000000000", bob.id, "viewer"),
        Err(IdentityError::TenantNotFound(_))
    ));

    let m = s.catalog.set_member_role(&acme, bob.id, "manager").unwrap();
    assert!(m.can("audit_view"));
    assert!(matches!(
        s.catalog.set_member_role(&beta, bob.id, "manager"),
        Err(IdentityError::NotAMember)
    ));
    s.catalog.remove_member(&acme, bob.id).unwrap();
    assert!(s.catalog.membership(bob.id, &acme).unwrap().is_none());
    assert!(matches!(
        s.catalog.remove_member(&acme, bob.id),
        Err(IdentityError::NotAMember)
    ));

    // The schema keeps a member's role inside the member's tenant.
    let beta_viewer = s.catalog.role(&beta, "viewer").unwrap().unwrap().id;
    let raw = s.outside().execute(
        "INSERT INTO memberships (user_id, tenant_id, role_id, created_at)
         VALUES (?1, ?2, ?3, 'x')",
        rusqlite::params![bob.id, acme, beta_viewer],
    );
    assert!(raw.is_err());
}

#[test]
fn a_tenant_keeps_at_least_one_admin() {
    let s = Setup::new();
    let acme = s.tenant("acme");
    let ann = s.user("ann@example.com");
    let bob = s.user("bob@example.com");
    s.catalog.add_member(&acme, ann.id, "admin").unwrap();
    assert!(matches!(
        s.catalog.set_member_role(&acme, ann.id, "viewer"),
        Err(IdentityError::LastAdmin)
    ));
    assert!(matches!(
        s.catalog.remove_member(&acme, ann.id),
        Err(IdentityError::LastAdmin)
    ));
    // Setting the same role again is not a change.
    s.catalog.set_member_role(&acme, ann.id, "admin").unwrap();
    s.catalog.add_member(&acme, bob.id, "admin").unwrap();
    s.catalog.set_member_role(&acme, ann.id, "viewer").unwrap();
    assert!(matches!(
        s.catalog.remove_member(&acme, bob.id),
        Err(IdentityError::LastAdmin)
    ));
}

#[test]
fn builtin_and_used_roles_are_protected() {
    let s = Setup::new();
    let acme = s.tenant("acme");
    let ann = s.user("ann@example.com");

    for builtin in ["admin", "manager", "agent", "viewer"] {
        assert!(matches!(
            s.catalog.delete_role(&acme, builtin),
            Err(IdentityError::RoleBuiltin(_))
        ));
        assert!(matches!(
            s.catalog.update_role(
                &acme,
                builtin,
                &RoleUpdate {
                    name: Some("renamed".into()),
                    ..RoleUpdate::default()
                }
            ),
            Err(IdentityError::RoleBuiltin(_))
        ));
        assert!(matches!(
            s.catalog.update_role(
                &acme,
                builtin,
                &RoleUpdate {
                    permissions: Some(vec![]),
                    ..RoleUpdate::default()
                }
            ),
            Err(IdentityError::RoleBuiltin(_))
        ));
    }

    let sales = s
        .catalog
        .create_role(&acme, "sales", &["orders_view", "orders_create"])
        .unwrap();
    assert!(!sales.builtin && !sales.all_permissions);
    assert_eq!(sales.permissions, set(&["orders_create", "orders_view"]));
    assert!(matches!(
        s.catalog.create_role(&acme, "sales", &["orders_view"]),
        Err(IdentityError::RoleTaken(_))
    ));
    assert!(matches!(
        s.catalog.create_role(&acme, "viewer", &["orders_view"]),
        Err(IdentityError::RoleTaken(_))
    ));
    assert!(matches!(
        s.catalog.create_role(&acme, "god", &["*"]),
        Err(IdentityError::InvalidPermission(p)) if p == "*"
    ));
    assert!(matches!(
        s.catalog.create_role(&acme, "x", &["orders_fly"]),
        Err(IdentityError::InvalidPermission(_))
    ));
    assert_eq!(
        field_of(
            s.catalog
                .create_role(&acme, "Sales Team", &["orders_view"])
                .unwrap_err()
        ),
        "name"
    );
    // The same name in another tenant is fine.
    let beta = s.tenant("beta");
    s.catalog
        .create_role(&beta, "sales", &["orders_view"])
        .unwrap();

    s.catalog.add_member(&acme, ann.id, "sales").unwrap();
    assert!(matches!(
        s.catalog.delete_role(&acme, "sales"),
        Err(IdentityError::RoleInUse(_))
    ));
    // The schema agrees, whoever deletes.
    let raw = s
        .outside()
        .execute("DELETE FROM roles WHERE id = ?1", [sales.id]);
    assert!(raw.is_err());

    let renamed = s
        .catalog
        .update_role(
            &acme,
            "sales",
            &RoleUpdate {
                name: Some("sales-eu".into()),
                permissions: None,
            },
        )
        .unwrap();
    assert_eq!(renamed.permissions, sales.permissions);
    assert_eq!(renamed.member_count, 1);
    assert_eq!(
        s.catalog.membership(ann.id, &acme).unwrap().unwrap().role,
        "sales-eu"
    );
    assert!(matches!(
        s.catalog.update_role(
            &acme,
            "sales-eu",
            &RoleUpdate {
                name: Some("agent".into()),
                permissions: None
            }
        ),
        Err(IdentityError::RoleTaken(_))
    ));
    assert!(matches!(
        s.catalog
            .update_role(&acme, "sales", &RoleUpdate::default()),
        Err(IdentityError::RoleNotFound(_))
    ));

    s.catalog.set_member_role(&acme, ann.id, "viewer").unwrap();
    s.catalog.delete_role(&acme, "sales-eu").unwrap();
    assert!(s.catalog.role(&acme, "sales-eu").unwrap().is_none());
    assert!(matches!(
        s.catalog.delete_role(&acme, "sales-eu"),
        Err(IdentityError::RoleNotFound(_))
    ));
}

#[test]
fn a_permission_change_is_seen_by_the_next_membership_read() {
    let s = Setup::new();
    let acme = s.tenant("acme");
    let ann = s.user("ann@example.com");
    s.catalog
        .create_role(
            &acme,
            "support",
            &["chats_create", "orders_view", "orders_edit"],
        )
        .unwrap();
    s.catalog.add_member(&acme, ann.id, "support").unwrap();
    assert!(s
        .catalog
        .membership(ann.id, &acme)
        .unwrap()
        .unwrap()
        .can("orders_edit"));

    s.catalog
        .update_role(
            &acme,
            "support",
            &RoleUpdate {
                permissions: Some(vec!["chats_create".into(), "orders_view".into()]),
                name: None,
            },
        )
        .unwrap();
    let now = s.catalog.membership(ann.id, &acme).unwrap().unwrap();
    assert!(!now.can("orders_edit"));
    assert_eq!(*now.permissions, set(&["chats_create", "orders_view"]));

    // Also when another process makes the change.
    s.outside()
        .execute(
            "UPDATE roles SET permissions = '[\"orders_view\"]' WHERE name = 'support'",
            [],
        )
        .unwrap();
    let now = s.catalog.membership(ann.id, &acme).unwrap().unwrap();
    assert_eq!(*now.permissions, set(&["orders_view"]));

    s.catalog.set_member_role(&acme, ann.id, "viewer").unwrap();
    assert_eq!(
        s.catalog.membership(ann.id, &acme).unwrap().unwrap().role,
        "viewer"
    );
}

#[test]
fn purging_a_tenant_takes_its_roles_memberships_and_tokens() {
    let s = Setup::new();
    let acme = s.tenant("acme");
    let beta = s.tenant("beta");
    let ann = s.user("ann@example.com");
    let root = s.admin("root@example.com");
    s.catalog
        .create_role(&acme, "sales", &["orders_view"])
        .unwrap();
    s.catalog.add_member(&acme, ann.id, "admin").unwrap();
    s.catalog
        .add_member(&acme, s.user("bob@example.com").id, "sales")
        .unwrap();
    s.catalog.add_member(&beta, ann.id, "agent").unwrap();
    s.catalog
        .create_session(
            &NewSession::Personal {
                token_hash: token_hash("pat"),
                user_id: ann.id,
                tenant_id: acme.clone(),
                name: "ci".into(),
                expires_at: None,
            },
            NOW,
        )
        .unwrap();
    s.catalog
        .create_session(
            &NewSession::ImpersonatedSession {
                user_id: ann.id,
                tenant_id: acme.clone(),
                impersonated_by: root.id,
                browser: browser(token_hash("impersonating"), NOW + 3600),
            },
            NOW,
        )
        .unwrap();
    let browser = s
        .catalog
        .create_session(
            &NewSession::Session {
                user_id: ann.id,
                browser: browser(token_hash("browser"), NOW + 3600),
            },
            NOW,
        )
        .unwrap();
    let mut entry = AuditEntry::new(ActorType::User, "member.added");
    entry.tenant_id = Some(acme.clone());
    s.catalog.record_audit(&entry).unwrap();

    // What lifecycle::purge does once the file is gone.
    s.catalog.set_status(&acme, TenantStatus::Deleted).unwrap();
    s.catalog.delete_row(&acme).unwrap();

    let q = |table: &str| {
        s.count(&format!(
            "SELECT count(*) FROM {table} WHERE tenant_id = '{acme}'"
        ))
    };
    assert_eq!((q("roles"), q("memberships"), q("sessions")), (0, 0, 0));
    assert_eq!(q("audit_log"), 1, "the log outlives the tenant");
    // Everything else stays.
    assert_eq!(s.catalog.roles(&beta).unwrap().len(), 4);
    assert_eq!(s.catalog.memberships_of(ann.id).unwrap().len(), 1);
    assert!(s.catalog.user_by_id(ann.id).unwrap().is_some());
    assert_eq!(
        s.catalog
            .session_by_token_hash(&token_hash("browser"), NOW)
            .unwrap()
            .map(|s| s.id),
        Some(browser)
    );
}

fn browser_session(s: &Setup, user: i64, token: &str, expires_at: i64) -> i64 {
    s.catalog
        .create_session(
            &NewSession::Session {
                user_id: user,
                browser: Browser {
                    csrf_token: Some(format!("csrf-{token}")),
                    ..browser(token_hash(token), expires_at)
                },
            },
            NOW,
        )
        .unwrap()
}

#[test]
fn only_live_sessions_are_returned() {
    let s = Setup::new();
    let ann = s.user("ann@example.com");
    let id = browser_session(&s, ann.id, "a", NOW + 100);
    let found = s
        .catalog
        .session_by_token_hash(&token_hash("a"), NOW)
        .unwrap()
        .unwrap();
    assert_eq!(found.id, id);
    assert_eq!(found.kind, SessionKind::Session);
    assert_eq!(found.user_id, Some(ann.id));
    assert_eq!(found.csrf_token.as_deref(), Some("csrf-a"));
    assert_eq!((found.created_at, found.last_used_at), (NOW, NOW));
    assert!(found.is_live(NOW));
    assert!(!format!("{found:?}").contains("csrf-a"));

    // Absolute expiry.
    let lookup = |token: &str, at: i64| {
        s.catalog
            .session_by_token_hash(&token_hash(token), at)
            .unwrap()
    };
    assert!(lookup("a", NOW + 99).is_some());
    assert!(lookup("a", NOW + 100).is_none());
    assert!(!found.is_live(NOW + 100));
    assert!(lookup("unknown", NOW).is_none());
    assert!(s
        .catalog
        .session_by_token_hash("not hex", NOW)
        .unwrap()
        .is_none());
    assert!(s
        .catalog
        .session_by_token_hash(&token_hash("a").to_uppercase(), NOW)
        .unwrap()
        .is_none());

    // Idle expiry, and touching that keeps it alive without a write per request.
    s.catalog
        .create_session(
            &NewSession::Session {
                user_id: ann.id,
                browser: Browser {
                    idle_timeout_secs: Some(600),
                    ..browser(token_hash("idle"), NOW + 10_000)
                },
            },
            NOW,
        )
        .unwrap();
    let idle = lookup("idle", NOW + 30).unwrap();
    assert!(
        !s.catalog.touch_session(&idle, NOW + 30).unwrap(),
        "too soon"
    );
    assert_eq!(lookup("idle", NOW + 30).unwrap().last_used_at, NOW);
    assert!(lookup("idle", NOW + 600).is_none());
    let idle = lookup("idle", NOW + 500).unwrap();
    assert!(s.catalog.touch_session(&idle, NOW + 500).unwrap());
    let idle = lookup("idle", NOW + 1000).unwrap();
    assert_eq!(idle.last_used_at, NOW + 500);
    assert!(lookup("idle", NOW + 1100).is_none());

    // Revoked.
    assert!(s.catalog.revoke_session(id).unwrap());
    assert!(!s.catalog.revoke_session(id).unwrap());
    assert!(lookup("a", NOW).is_none());
    assert!(!s.catalog.touch_session(&found, NOW + 120).unwrap());

    // A disabled user's sessions are dead, and stay revoked after enabling again.
    let kept = browser_session(&s, ann.id, "b", NOW + 100);
    assert_eq!(lookup("b", NOW).map(|s| s.id), Some(kept));
    s.catalog.set_disabled(ann.id, true).unwrap();
    assert!(lookup("b", NOW).is_none());
    s.catalog.set_disabled(ann.id, false).unwrap();
    assert!(lookup("b", NOW).is_none());
}

#[test]
fn sign_out_everywhere_but_here() {
    let s = Setup::new();
    let acme = s.tenant("acme");
    let ann = s.user("ann@example.com");
    let bob = s.user("bob@example.com");
    s.catalog.add_member(&acme, ann.id, "agent").unwrap();
    let here = browser_session(&s, ann.id, "here", NOW + 100);
    browser_session(&s, ann.id, "phone", NOW + 100);
    browser_session(&s, ann.id, "laptop", NOW + 100);
    browser_session(&s, bob.id, "bob", NOW + 100);
    let pat = s
        .catalog
        .create_session(
            &NewSession::Personal {
                token_hash: token_hash("pat"),
                user_id: ann.id,
                tenant_id: acme.clone(),
                name: " deploy bot ".into(),
                expires_at: None,
            },
            NOW,
        )
        .unwrap();

    assert_eq!(
        s.catalog.revoke_user_sessions(ann.id, Some(here)).unwrap(),
        2
    );
    let live = |t: &str| {
        s.catalog
            .session_by_token_hash(&token_hash(t), NOW)
            .unwrap()
            .is_some()
    };
    assert!(live("here") && live("bob") && live("pat"));
    assert!(!live("phone") && !live("laptop"));
    // A personal token never expires unless told to.
    assert!(s
        .catalog
        .session_by_token_hash(&token_hash("pat"), i64::MAX)
        .unwrap()
        .is_some());

    let tokens = s.catalog.personal_tokens(ann.id).unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!((tokens[0].id, tokens[0].name.as_str()), (pat, "deploy bot"));
    assert_eq!(tokens[0].tenant_id, acme);
    assert!(s.catalog.personal_tokens(bob.id).unwrap().is_empty());
    assert!(
        !s.catalog.revoke_personal_token(bob.id, pat).unwrap(),
        "not bob's"
    );
    assert!(
        !s.catalog.revoke_personal_token(ann.id, here).unwrap(),
        "not a token"
    );
    assert!(s.catalog.revoke_personal_token(ann.id, pat).unwrap());
    assert!(!live("pat"));
    assert!(s.catalog.personal_tokens(ann.id).unwrap().is_empty());

    assert_eq!(s.catalog.revoke_user_sessions(ann.id, None).unwrap(), 1);
    assert!(!live("here"));

    // Admin sessions.
    let root = s.admin("root@example.com");
    let admin_session = |token: &str| {
        s.catalog
            .create_session(
                &NewSession::Admin {
                    admin_id: root.id,
                    browser: browser(token_hash(token), NOW + 100),
                },
                NOW,
            )
            .unwrap()
    };
    let console = admin_session("console");
    admin_session("other-console");
    assert_eq!(
        s.catalog
            .revoke_admin_sessions(root.id, Some(console))
            .unwrap(),
        1
    );
    let admin = s
        .catalog
        .session_by_token_hash(&token_hash("console"), NOW)
        .unwrap()
        .unwrap();
    assert_eq!(
        (admin.kind, admin.admin_id, admin.user_id),
        (SessionKind::Admin, Some(root.id), None)
    );
    assert!(!live("other-console"));
}

#[test]
fn sessions_are_checked_before_they_are_stored() {
    // Shapes (a session without its user, a token naming a user and an admin, a personal
    // token without a name...) are the variants of `NewSession`: the compiler refuses the
    // wrong ones. Values and references are checked here.
    let s = Setup::new();
    let acme = s.tenant("acme");
    let ann = s.user("ann@example.com");
    let ok = browser(token_hash("t"), NOW + 60);
    let session = |browser: Browser| NewSession::Session {
        user_id: ann.id,
        browser,
    };
    let refused = |new: NewSession| s.catalog.create_session(&new, NOW).unwrap_err();
    let field = |new: NewSession| field_of(refused(new));
    assert_eq!(
        field(session(Browser {
            token_hash: "raw-token".into(),
            ..ok.clone()
        })),
        "token_hash"
    );
    assert_eq!(
        field(session(Browser {
            expires_at: NOW,
            ..ok.clone()
        })),
        "expires_at"
    );
    assert_eq!(
        field(session(Browser {
            idle_timeout_secs: Some(0),
            ..ok.clone()
        })),
        "idle_timeout_secs"
    );
    assert!(matches!(
        refused(NewSession::Session {
            user_id: 9999,
            browser: ok.clone(),
        }),
        IdentityError::UserNotFound
    ));
    // Tenant-bound user credentials need a membership.
    assert!(matches!(
        refused(NewSession::Personal {
            token_hash: ok.token_hash.clone(),
            user_id: ann.id,
            tenant_id: acme.clone(),
            name: "ci".into(),
            expires_at: None,
        }),
        IdentityError::NotAMember
    ));
    assert!(matches!(
        refused(NewSession::Admin {
            admin_id: 999,
            browser: ok.clone(),
        }),
        IdentityError::AdminNotFound
    ));
    s.catalog.create_session(&session(ok), NOW).unwrap();
    assert_eq!(s.count("SELECT count(*) FROM sessions"), 1);
}

/// A browser's part of a session, with no CSRF token and no idle timeout.
fn browser(token_hash: String, expires_at: i64) -> Browser {
    Browser {
        token_hash,
        csrf_token: None,
        expires_at,
        idle_timeout_secs: None,
    }
}

#[test]
fn a_ticket_is_exchanged_once_even_when_eight_threads_race() {
    let s = Setup::new();
    let acme = s.tenant("acme");
    let ann = s.user("ann@example.com");
    let root = s.admin("root@example.com");
    s.catalog.add_member(&acme, ann.id, "viewer").unwrap();
    let ticket = |token: &str, expires_at: i64| {
        s.catalog
            .create_session(
                &NewSession::ImpersonationTicket {
                    token_hash: token_hash(token),
                    user_id: ann.id,
                    tenant_id: acme.clone(),
                    impersonated_by: root.id,
                    expires_at,
                },
                NOW,
            )
            .unwrap()
    };
    let id = ticket("ticket", NOW + 30);
    // A ticket is not a session: only the exchange reaches it.
    assert!(s
        .catalog
        .session_by_token_hash(&token_hash("ticket"), NOW)
        .unwrap()
        .is_none());

    let barrier = Barrier::new(8);
    let won: Vec<Session> = thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    s.catalog
                        .consume_ticket(&token_hash("ticket"), NOW + 1)
                        .unwrap()
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(won.len(), 1, "exactly one exchange succeeds");
    let t = &won[0];
    assert_eq!(t.id, id);
    assert_eq!(t.kind, SessionKind::ImpersonationTicket);
    assert_eq!(
        (t.user_id, t.tenant_id.as_deref(), t.impersonated_by),
        (Some(ann.id), Some(acme.as_str()), Some(root.id))
    );
    assert_eq!(t.revoked_at, Some(NOW + 1));
    assert!(s
        .catalog
        .consume_ticket(&token_hash("ticket"), NOW + 2)
        .unwrap()
        .is_none());

    // Expired tickets cannot be exchanged, and sessions are not tickets.
    ticket("late", NOW + 30);
    assert!(s
        .catalog
        .consume_ticket(&token_hash("late"), NOW + 30)
        .unwrap()
        .is_none());
    browser_session(&s, ann.id, "browser", NOW + 30);
    assert!(s
        .catalog
        .consume_ticket(&token_hash("browser"), NOW)
        .unwrap()
        .is_none());
    assert!(s
        .catalog
        .session_by_token_hash(&token_hash("browser"), NOW)
        .unwrap()
        .is_some());
}

#[test]
fn audit_filters_and_pages_newest_first() {
    let s = Setup::new();
    let acme = s.tenant("acme");
    let beta = s.tenant("beta");
    let record = |actor: ActorType,
                  id: Option<i64>,
                  email: Option<&str>,
                  tenant: &str,
                  action: &str,
                  at: i64| {
        let mut e = AuditEntry::new(actor, action);
        e.actor_id = id;
        e.actor_email = email.map(str::to_string);
        e.tenant_id = (!tenant.is_empty()).then(|| tenant.to_string());
        e.at = at;
        e.ip = Some("203.0.113.7".into());
        e.user_agent = Some(format!("agent\u{0}{}", "x".repeat(1000)));
        e.details = serde_json::json!({"n": at - NOW});
        s.catalog.record_audit(&e).unwrap()
    };
    let mut ids = Vec::new();
    for i in 0..10 {
        let tenant = if i % 2 == 0 { &acme } else { &beta };
        ids.push(record(
            ActorType::User,
            Some(1),
            Some("ann@example.com"),
            tenant,
            "member.added",
            NOW + i,
        ));
    }
    ids.push(record(
        ActorType::Anonymous,
        None,
        Some("Mallory@Example.com"),
        "",
        "auth.login_failed",
        NOW + 20,
    ));
    ids.push(record(
        ActorType::Admin,
        Some(1),
        None,
        "",
        "tenant.suspended",
        NOW + 21,
    ));
    ids.push(record(
        ActorType::User,
        Some(2),
        None,
        &acme,
        "auth.login",
        NOW + 22,
    ));

    let q = |f: AuditFilter| -> Vec<i64> {
        s.catalog
            .audit_query(&f)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect()
    };
    let all = q(AuditFilter::default());
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(all, newest_first);

    let acme_ids = q(AuditFilter {
        tenant_id: Some(acme.clone()),
        ..AuditFilter::default()
    });
    assert_eq!(acme_ids, [ids[12], ids[8], ids[6], ids[4], ids[2], ids[0]]);

    // Pages of two through acme's events, by the keyset cursor.
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = q(AuditFilter {
            tenant_id: Some(acme.clone()),
            before_id: before,
            limit: 2,
            ..AuditFilter::default()
        });
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        before = page.last().copied();
        paged.extend(page);
    }
    assert_eq!(paged, acme_ids);

    assert_eq!(
        q(AuditFilter {
            action: Some("auth.".into()),
            ..AuditFilter::default()
        }),
        [ids[12], ids[10]]
    );
    assert_eq!(
        q(AuditFilter {
            action: Some("auth.login".into()),
            ..AuditFilter::default()
        }),
        [ids[12]]
    );
    // User 1 and admin 1 are different actors.
    assert_eq!(
        q(AuditFilter {
            actor: Some(AuditActor::Admin(1)),
            ..AuditFilter::default()
        }),
        [ids[11]]
    );
    assert_eq!(
        q(AuditFilter {
            actor: Some(AuditActor::User(1)),
            ..AuditFilter::default()
        })
        .len(),
        10
    );
    let failed = s
        .catalog
        .audit_query(&AuditFilter {
            actor: Some(AuditActor::Email("MALLORY@example.com".into())),
            ..AuditFilter::default()
        })
        .unwrap();
    assert_eq!(failed.len(), 1);
    let f = &failed[0];
    assert_eq!(f.actor_type, ActorType::Anonymous);
    assert_eq!(f.actor_email.as_deref(), Some("mallory@example.com"));
    assert_eq!(f.action, "auth.login_failed");
    assert_eq!(f.ip.as_deref(), Some("203.0.113.7"));
    let ua = f.user_agent.as_deref().unwrap();
    assert!(
        ua.starts_with("agentx") && ua.chars().count() == 512,
        "clipped, no NUL"
    );
    assert_eq!(f.details, serde_json::json!({"n": 20}));

    assert_eq!(
        q(AuditFilter {
            since: Some(NOW + 8),
            tenant_id: Some(acme.clone()),
            ..AuditFilter::default()
        }),
        [ids[12], ids[8]]
    );
    assert_eq!(
        q(AuditFilter {
            limit: 0,
            ..AuditFilter::default()
        })
        .len(),
        1
    );
    for _ in 0..200 {
        record(ActorType::System, None, None, "", "system.tick", NOW);
    }
    assert_eq!(
        q(AuditFilter {
            limit: 10_000,
            ..AuditFilter::default()
        })
        .len(),
        MAX_AUDIT_LIMIT
    );

    for bad in ["", "Auth.Login", "auth login", "auth;drop"] {
        let err = s
            .catalog
            .record_audit(&AuditEntry::new(ActorType::System, bad))
            .unwrap_err();
        assert_eq!(field_of(err), "action", "{bad:?}");
    }
}

#[test]
fn audit_queries_use_the_indexes() {
    let s = Setup::new();
    let conn = s.outside();
    let plan = |sql: &str| -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt.query_map([], |row| row.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    };
    let by_tenant =
        plan("SELECT * FROM audit_log WHERE tenant_id = 'x' AND id < 5 ORDER BY id DESC LIMIT 50");
    assert!(by_tenant.contains("audit_by_tenant"), "{by_tenant}");
    assert!(!by_tenant.contains("TEMP B-TREE"), "{by_tenant}");
    let by_action =
        plan("SELECT * FROM audit_log WHERE action = 'auth.login' ORDER BY id DESC LIMIT 50");
    assert!(by_action.contains("audit_by_action"), "{by_action}");
    let membership = plan(
        "SELECT r.permissions FROM memberships m JOIN roles r ON r.id = m.role_id
         WHERE m.user_id = 1 AND m.tenant_id = 'x'",
    );
    assert!(!membership.contains("SCAN"), "{membership}");
}
