-- Invitations: how a tenant admin brings a person in by email. Nobody in a tenant learns or sets
-- a credential of an account: the invitee accepts with the one-time token, either by setting the
-- password of a new account or with the existing account's own password or session. Until then
-- there is no membership.
--
-- Only the SHA-256 of the token is stored, as for sessions. Times are unix seconds (compared
-- when an invitation is accepted).

CREATE TABLE invitations (
    id          INTEGER PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- Normalised as users' emails are.
    email       TEXT NOT NULL COLLATE NOCASE CHECK (email = lower(email)),
    role_id     INTEGER NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE
                CHECK (length(token_hash) = 64 AND token_hash NOT GLOB '*[^0-9a-f]*'),
    -- NULL: made by the operator's CLI, or by a user since deleted.
    invited_by  INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL CHECK (expires_at > created_at),
    accepted_at INTEGER,
    accepted_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    revoked_at  INTEGER,
    CHECK (accepted_at IS NULL OR revoked_at IS NULL),
    -- Deleting a role takes its invitations with it; the role must be of the same tenant.
    FOREIGN KEY (role_id, tenant_id) REFERENCES roles(id, tenant_id) ON DELETE CASCADE
) STRICT;

-- At most one open invitation per tenant and email: a new one replaces the old.
CREATE UNIQUE INDEX invitations_one_open ON invitations(tenant_id, email)
    WHERE accepted_at IS NULL AND revoked_at IS NULL;
CREATE INDEX invitations_by_role ON invitations(role_id);
CREATE INDEX invitations_by_inviter ON invitations(invited_by) WHERE invited_by IS NOT NULL;
CREATE INDEX invitations_by_acceptor ON invitations(accepted_by) WHERE accepted_by IS NOT NULL;
