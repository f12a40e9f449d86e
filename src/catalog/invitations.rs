//! Invitations into a tenant: made by a member with `members_manage` (or the operator's CLI),
//! accepted by the person invited, who sets the password of a new account or proves they hold
//! the existing one. Nobody else ever sets or learns a credential, and until an invitation is
//! accepted there is no membership. Only the SHA-256 of the token is stored (the caller
//! hashes, as for sessions); times are unix seconds and functions that decide expiry take `now`.

use serde::Serialize;

use super::identity::{
    checked_user, insert_user, load_user, normalize_email, IdentityError, NewUser, User,
};
use super::roles::{insert_membership, require_tenant, role_ref, Membership};
use super::Catalog;
use crate::args;
use crate::store::{RowRef, Sql, StoreError, Value};

/// How long an invitation can be accepted, unless the caller says otherwise.
pub const INVITATION_TTL_SECS: i64 = 7 * 24 * 3600;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    Pending,
    Expired,
    Accepted,
    Revoked,
}

/// A stored invitation, without its token's hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Invitation {
    pub id: i64,
    pub tenant_id: String,
    /// Normalised (see [`normalize_email`]).
    pub email: String,
    /// The role's name now (a renamed role carries its invitations along).
    pub role: String,
    /// `None`: made by the CLI, or the user who made it is gone.
    pub invited_by: Option<i64>,
    pub created_at: i64,
    pub expires_at: i64,
    pub accepted_at: Option<i64>,
    pub accepted_by: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl Invitation {
    pub fn status(&self, now: i64) -> InvitationStatus {
        if self.accepted_at.is_some() {
            InvitationStatus::Accepted
        } else if self.revoked_at.is_some() {
            InvitationStatus::Revoked
        } else if self.expires_at <= now {
            InvitationStatus::Expired
        } else {
            InvitationStatus::Pending
        }
    }

    /// Refuses an invitation that can no longer be accepted, saying why.
    pub fn check_usable(&self, now: i64) -> Result<(), IdentityError> {
        match self.status(now) {
            InvitationStatus::Pending => Ok(()),
            InvitationStatus::Expired => Err(IdentityError::InvitationExpired),
            InvitationStatus::Accepted => Err(IdentityError::InvitationAccepted),
            InvitationStatus::Revoked => Err(IdentityError::InvitationRevoked),
        }
    }
}

/// What to store.
#[derive(Clone, Debug)]
pub struct NewInvitation<'a> {
    pub tenant_id: &'a str,
    pub email: &'a str,
    /// A role of the tenant, by name.
    pub role: &'a str,
    /// SHA-256 of the token, 64 lower-case hex digits.
    pub token_hash: &'a str,
    pub invited_by: Option<i64>,
    pub ttl_secs: i64,
}

/// Who accepts an invitation.
#[derive(Clone, Debug)]
pub enum Acceptor {
    /// An existing account whose owner has proved it (a password or a session); its email must
    /// be the invitation's.
    Existing(i64),
    /// A new account for the invitation's email, with the password its owner chose.
    New(NewUser),
}

/// What accepting did.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub invitation: Invitation,
    pub user: User,
    pub membership: Membership,
    pub new_user: bool,
}

const INVITATION_SELECT: &str = "SELECT i.id, i.tenant_id, i.email, r.name, i.invited_by,
        i.created_at, i.expires_at, i.accepted_at, i.accepted_by, i.revoked_at
     FROM invitations i JOIN roles r ON r.id = i.role_id";

fn invitation_from_row(row: &dyn RowRef) -> Result<Invitation, StoreError> {
    Ok(Invitation {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        email: row.get(2)?,
        role: row.get(3)?,
        invited_by: row.get(4)?,
        created_at: row.get(5)?,
        expires_at: row.get(6)?,
        accepted_at: row.get(7)?,
        accepted_by: row.get(8)?,
        revoked_at: row.get(9)?,
    })
}

fn load(db: &dyn Sql, clause: &str, key: Value) -> Result<Option<Invitation>, StoreError> {
    db.query_row(
        &format!("{INVITATION_SELECT} WHERE {clause}"),
        &[key],
        invitation_from_row,
    )
}

impl Catalog {
    /// Stores an invitation. An open invitation of the same email to the same tenant is
    /// revoked in the same transaction (the new token replaces the old, which is how one
    /// resends an invitation). Refused if a user with that email is a member already.
    /// Returns the invitation and how many open ones it replaced.
    pub fn create_invitation(
        &self,
        new: &NewInvitation<'_>,
        now: i64,
    ) -> Result<(Invitation, usize), IdentityError> {
        let email = normalize_email(new.email)?;
        if new.ttl_secs <= 0 {
            return Err(IdentityError::invalid("ttl", "must be positive"));
        }
        self.write_sql(|db| {
            require_tenant(db, new.tenant_id)?;
            let (role_id, _) = role_ref(db, new.tenant_id, new.role)?;
            let member: bool = db.query_one(
                "SELECT EXISTS (SELECT 1 FROM memberships m JOIN users u ON u.id = m.user_id
                                WHERE u.email = ?1 AND m.tenant_id = ?2)",
                args![&email, new.tenant_id],
                |row| row.get(0),
            )?;
            if member {
                return Err(IdentityError::AlreadyAMember);
            }
            let replaced = db.execute(
                "UPDATE invitations SET revoked_at = ?3
                 WHERE tenant_id = ?1 AND email = ?2
                   AND accepted_at IS NULL AND revoked_at IS NULL",
                args![new.tenant_id, &email, now],
            )?;
            let id: i64 = db.query_one(
                "INSERT INTO invitations (tenant_id, email, role_id, token_hash, invited_by,
                                          created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 RETURNING id",
                args![
                    new.tenant_id,
                    email,
                    role_id,
                    new.token_hash,
                    new.invited_by,
                    now,
                    now.saturating_add(new.ttl_secs)
                ],
                |row| row.get(0),
            )?;
            let invitation =
                load(db, "i.id = ?1", id.into())?.ok_or(IdentityError::InvitationNotFound)?;
            Ok((invitation, replaced.rows as usize))
        })
    }

    /// A tenant's invitations not yet accepted or revoked (expired ones included), newest first.
    pub fn open_invitations(&self, tenant_id: &str) -> Result<Vec<Invitation>, IdentityError> {
        self.read(|db| {
            require_tenant(db, tenant_id)?;
            Ok(db.query_map(
                &format!(
                    "{INVITATION_SELECT} WHERE i.tenant_id = ?1
                       AND i.accepted_at IS NULL AND i.revoked_at IS NULL
                     ORDER BY i.id DESC"
                ),
                args![tenant_id],
                invitation_from_row,
            )?)
        })
    }

    /// The invitation a token's digest names, whatever its state.
    pub fn invitation_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<Invitation>, IdentityError> {
        self.read(|db| Ok(load(db, "i.token_hash = ?1", token_hash.into())?))
    }

    /// Revokes an open invitation of this tenant; another tenant's id names nothing.
    pub fn revoke_invitation(
        &self,
        tenant_id: &str,
        id: i64,
        now: i64,
    ) -> Result<Invitation, IdentityError> {
        self.write_sql(|db| {
            let invitation = load(db, "i.id = ?1", id.into())?
                .filter(|i| i.tenant_id == tenant_id)
                .ok_or(IdentityError::InvitationNotFound)?;
            match invitation.status(now) {
                InvitationStatus::Accepted => return Err(IdentityError::InvitationAccepted),
                InvitationStatus::Revoked => return Err(IdentityError::InvitationRevoked),
                InvitationStatus::Pending | InvitationStatus::Expired => {}
            }
            db.execute(
                "UPDATE invitations SET revoked_at = ?2 WHERE id = ?1",
                args![id, now],
            )?;
            load(db, "i.id = ?1", id.into())?.ok_or(IdentityError::InvitationNotFound)
        })
    }

    /// Accepts the invitation a token's digest names, once: in one transaction it checks that
    /// the invitation is pending at `now`, makes the new account (or checks that the existing
    /// one is the invitation's email), adds the membership and marks the invitation used.
    pub fn accept_invitation(
        &self,
        token_hash: &str,
        acceptor: &Acceptor,
        now: i64,
    ) -> Result<Accepted, IdentityError> {
        let new_user = match acceptor {
            Acceptor::New(new) => Some(checked_user(new)?),
            Acceptor::Existing(_) => None,
        };
        self.write_sql(|db| {
            let invitation = load(db, "i.token_hash = ?1", token_hash.into())?
                .ok_or(IdentityError::InvitationNotFound)?;
            invitation.check_usable(now)?;
            let user = match (acceptor, &new_user) {
                (_, Some(new)) => {
                    if new.email != invitation.email {
                        return Err(IdentityError::InvitationForAnotherEmail);
                    }
                    insert_user(db, new)?
                }
                (Acceptor::Existing(id), None) => {
                    let user = load_user(db, *id)?
                        .filter(|u| !u.disabled)
                        .ok_or(IdentityError::UserNotFound)?;
                    if user.email != invitation.email {
                        return Err(IdentityError::InvitationForAnotherEmail);
                    }
                    user
                }
                (Acceptor::New(_), None) => unreachable!("checked above"),
            };
            let role_id: i64 = db.query_one(
                "SELECT role_id FROM invitations WHERE id = ?1",
                args![invitation.id],
                |row| row.get(0),
            )?;
            let membership = insert_membership(db, &invitation.tenant_id, user.id, role_id)?;
            db.execute(
                "UPDATE invitations SET accepted_at = ?2, accepted_by = ?3 WHERE id = ?1",
                args![invitation.id, now, user.id],
            )?;
            let invitation = load(db, "i.id = ?1", invitation.id.into())?
                .ok_or(IdentityError::InvitationNotFound)?;
            Ok(Accepted {
                invitation,
                user,
                membership,
                new_user: new_user.is_some(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_kit::{add_tenant, Setup, HASH, NOW};

    /// What `auth::token::digest` gives, for the catalog's purposes: 64 hex digits, unique.
    fn made_up_digest() -> String {
        format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        )
    }

    fn setup() -> (tempfile::TempDir, Catalog, String) {
        let Setup { dir, catalog } = Setup::new();
        let tenant = add_tenant(&catalog, "acme", &[]).id.clone();
        (dir, catalog, tenant)
    }

    fn invite(catalog: &Catalog, tenant: &str, email: &str, now: i64) -> (Invitation, String) {
        let digest = made_up_digest();
        let (invitation, _) = catalog
            .create_invitation(
                &NewInvitation {
                    tenant_id: tenant,
                    email,
                    role: "viewer",
                    token_hash: &digest,
                    invited_by: None,
                    ttl_secs: 3600,
                },
                now,
            )
            .unwrap();
        (invitation, digest)
    }

    fn new_account(email: &str) -> Acceptor {
        Acceptor::New(NewUser {
            email: email.into(),
            name: "Ann".into(),
            surname: String::new(),
            photo_url: None,
            password_hash: HASH.into(),
        })
    }

    #[test]
    fn an_invitation_is_accepted_once_and_only_before_it_expires() {
        let (_dir, catalog, tenant) = setup();
        let (invitation, hash) = invite(&catalog, &tenant, " Ann@Example.TEST ", NOW);
        assert_eq!(invitation.email, "ann@example.test");
        assert_eq!(invitation.expires_at, NOW + 3600);
        assert_eq!(invitation.status(NOW), InvitationStatus::Pending);
        assert_eq!(invitation.status(NOW + 3600), InvitationStatus::Expired);
        // Nobody is a member until it is accepted.
        assert!(catalog.members(&tenant).unwrap().is_empty());
        let expired =
            catalog.accept_invitation(&hash, &new_account("ann@example.test"), NOW + 3600);
        assert!(
            matches!(expired, Err(IdentityError::InvitationExpired)),
            "{expired:?}"
        );
        assert!(catalog.user_by_email("ann@example.test").unwrap().is_none());

        let accepted = catalog
            .accept_invitation(&hash, &new_account("ann@example.test"), NOW + 3599)
            .unwrap();
        assert!(accepted.new_user);
        assert_eq!(accepted.membership.role, "viewer");
        assert_eq!(accepted.invitation.status(NOW), InvitationStatus::Accepted);
        assert_eq!(accepted.invitation.accepted_by, Some(accepted.user.id));
        let again = catalog.accept_invitation(&hash, &Acceptor::Existing(accepted.user.id), NOW);
        assert!(
            matches!(again, Err(IdentityError::InvitationAccepted)),
            "{again:?}"
        );
        assert!(catalog.open_invitations(&tenant).unwrap().is_empty());
    }

    #[test]
    fn a_new_invitation_replaces_the_open_one_and_a_revoked_one_is_refused() {
        let (_dir, catalog, tenant) = setup();
        let (first, first_hash) = invite(&catalog, &tenant, "ann@example.test", NOW);
        let (second, second_hash) = invite(&catalog, &tenant, "ANN@example.test", NOW + 1);
        let open = catalog.open_invitations(&tenant).unwrap();
        assert_eq!(open.iter().map(|i| i.id).collect::<Vec<_>>(), [second.id]);
        let replaced =
            catalog.accept_invitation(&first_hash, &new_account("ann@example.test"), NOW);
        assert!(
            matches!(replaced, Err(IdentityError::InvitationRevoked)),
            "{replaced:?}"
        );
        let revoked = catalog
            .revoke_invitation(&tenant, second.id, NOW + 2)
            .unwrap();
        assert_eq!(revoked.status(NOW + 2), InvitationStatus::Revoked);
        let refused =
            catalog.accept_invitation(&second_hash, &new_account("ann@example.test"), NOW);
        assert!(
            matches!(refused, Err(IdentityError::InvitationRevoked)),
            "{refused:?}"
        );
        assert!(matches!(
            catalog.revoke_invitation(&tenant, first.id, NOW),
            Err(IdentityError::InvitationRevoked)
        ));
    }

    #[test]
    fn an_existing_account_accepts_only_an_invitation_to_its_own_email() {
        let (_dir, catalog, tenant) = setup();
        let ann = catalog
            .create_user(&NewUser {
                email: "ann@example.test".into(),
                name: "Ann".into(),
                password_hash: HASH.into(),
                ..NewUser::default()
            })
            .unwrap();
        let (_, hash) = invite(&catalog, &tenant, "bob@example.test", NOW);
        let refused = catalog.accept_invitation(&hash, &Acceptor::Existing(ann.id), NOW);
        assert!(
            matches!(refused, Err(IdentityError::InvitationForAnotherEmail)),
            "{refused:?}"
        );
        let refused = catalog.accept_invitation(&hash, &new_account("carl@example.test"), NOW);
        assert!(
            matches!(refused, Err(IdentityError::InvitationForAnotherEmail)),
            "{refused:?}"
        );
        assert!(catalog.membership(ann.id, &tenant).unwrap().is_none());
        // Still usable by its own addressee.
        let (_, ann_hash) = invite(&catalog, &tenant, "ann@example.test", NOW);
        catalog
            .accept_invitation(&ann_hash, &Acceptor::Existing(ann.id), NOW)
            .unwrap();
        assert!(catalog.membership(ann.id, &tenant).unwrap().is_some());
        // A member is not invited again.
        let t = made_up_digest();
        let again = catalog.create_invitation(
            &NewInvitation {
                tenant_id: &tenant,
                email: "ann@example.test",
                role: "viewer",
                token_hash: &t,
                invited_by: None,
                ttl_secs: 60,
            },
            NOW,
        );
        assert!(
            matches!(again, Err(IdentityError::AlreadyAMember)),
            "{again:?}"
        );
    }
}
