-- Identity: users, their memberships in tenants with a per-tenant role, system admins,
-- sessions and tokens, and the audit log.
--
-- Times: records people read about (users, roles, memberships, admins) use RFC 3339 UTC text
-- like the rest of the catalog. Times that code compares on every request (sessions) and the
-- audit log's `at` (filtered by range, kept in id order) are unix seconds.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    -- Stored lower-cased by the code; NOCASE also makes the unique index refuse any ASCII
    -- case variant that bypassed it.
    email         TEXT NOT NULL UNIQUE COLLATE NOCASE CHECK (email = lower(email)),
    name          TEXT NOT NULL,
    surname       TEXT NOT NULL,
    photo_url     TEXT,
    -- A PHC string made by the auth module; only stored here.
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
) STRICT;

-- Per tenant. `permissions` is a JSON array of names from the code's fixed list; the built-in
-- admin role stores ["*"] so that permissions added later are included.
CREATE TABLE roles (
    id          INTEGER PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT NOT NULL
                CHECK (length(name) BETWEEN 1 AND 50 AND name NOT GLOB '*[^a-z0-9_-]*'),
    permissions TEXT NOT NULL CHECK (json_valid(permissions) AND json_type(permissions) = 'array'),
    builtin     INTEGER NOT NULL DEFAULT 0 CHECK (builtin IN (0, 1)),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (tenant_id, name),
    -- The target of memberships' composite key, which keeps a member's role in its tenant.
    UNIQUE (id, tenant_id)
) STRICT;

CREATE TABLE memberships (
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    role_id    INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (user_id, tenant_id),
    -- NO ACTION, not RESTRICT: both refuse deleting a role in use, but RESTRICT fires at once,
    -- inside the cascade of a tenant purge, if SQLite happens to cascade to roles before
    -- memberships. NO ACTION is checked at the end of the statement, when both are gone.
    FOREIGN KEY (role_id, tenant_id) REFERENCES roles(id, tenant_id) ON DELETE NO ACTION
) STRICT, WITHOUT ROWID;

CREATE INDEX memberships_by_tenant ON memberships(tenant_id);
CREATE INDEX memberships_by_role ON memberships(role_id);

CREATE TABLE system_admins (
    id            INTEGER PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE COLLATE NOCASE CHECK (email = lower(email)),
    password_hash TEXT NOT NULL,
    totp_secret   TEXT,
    totp_enabled  INTEGER NOT NULL DEFAULT 0 CHECK (totp_enabled IN (0, 1)),
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    CHECK (totp_enabled = 0 OR totp_secret IS NOT NULL)
) STRICT;

-- Browser sessions, personal access tokens, admin sessions and one-time impersonation
-- tickets. Only the SHA-256 of a token is stored. Times are unix seconds.
CREATE TABLE sessions (
    id                INTEGER PRIMARY KEY,
    token_hash        TEXT NOT NULL UNIQUE
                      CHECK (length(token_hash) = 64 AND token_hash NOT GLOB '*[^0-9a-f]*'),
    kind              TEXT NOT NULL
                      CHECK (kind IN ('session', 'personal', 'admin', 'impersonation_ticket')),
    user_id           INTEGER REFERENCES users(id) ON DELETE CASCADE,
    admin_id          INTEGER REFERENCES system_admins(id) ON DELETE CASCADE,
    tenant_id         TEXT REFERENCES tenants(id) ON DELETE CASCADE,
    name              TEXT,
    csrf_token        TEXT,
    impersonated_by   INTEGER REFERENCES system_admins(id) ON DELETE CASCADE,
    created_at        INTEGER NOT NULL,
    last_used_at      INTEGER NOT NULL,
    expires_at        INTEGER,
    idle_timeout_secs INTEGER CHECK (idle_timeout_secs > 0),
    revoked_at        INTEGER,
    -- Admin sessions belong to an admin and no tenant, everything else to a user.
    CHECK (CASE WHEN kind = 'admin'
                THEN admin_id IS NOT NULL AND user_id IS NULL AND tenant_id IS NULL
                ELSE user_id IS NOT NULL AND admin_id IS NULL END),
    -- Only personal tokens may live forever; they have a name and one tenant.
    CHECK (kind = 'personal' OR expires_at IS NOT NULL),
    CHECK (kind <> 'personal' OR (name IS NOT NULL AND tenant_id IS NOT NULL)),
    -- Impersonation is always by an admin, into one tenant.
    CHECK (kind <> 'impersonation_ticket' OR impersonated_by IS NOT NULL),
    CHECK (impersonated_by IS NULL OR (tenant_id IS NOT NULL AND kind IN ('session', 'impersonation_ticket')))
) STRICT;

CREATE INDEX sessions_by_user ON sessions(user_id) WHERE user_id IS NOT NULL;
CREATE INDEX sessions_by_admin ON sessions(admin_id) WHERE admin_id IS NOT NULL;
CREATE INDEX sessions_by_tenant ON sessions(tenant_id) WHERE tenant_id IS NOT NULL;
CREATE INDEX sessions_by_impersonator ON sessions(impersonated_by)
    WHERE impersonated_by IS NOT NULL;

-- No foreign keys: the log outlives the users, admins and tenants it names.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    actor_type  TEXT NOT NULL CHECK (actor_type IN ('user', 'admin', 'system', 'anonymous')),
    actor_id    INTEGER,
    actor_email TEXT,
    tenant_id   TEXT,
    action      TEXT NOT NULL,
    target_type TEXT,
    target_id   TEXT,
    ip          TEXT,
    user_agent  TEXT,
    details     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details))
) STRICT;

CREATE INDEX audit_by_tenant ON audit_log(tenant_id, id);
CREATE INDEX audit_by_action ON audit_log(action, id);
CREATE INDEX audit_by_actor ON audit_log(actor_type, actor_id, id) WHERE actor_id IS NOT NULL;
CREATE INDEX audit_by_email ON audit_log(actor_email, id) WHERE actor_email IS NOT NULL;

-- The built-in roles for tenants that existed before this migration; new tenants get them in
-- the transaction that inserts their row. Must match BUILTIN_ROLES in
-- src/catalog/permissions.rs (a test compares them).
INSERT INTO roles (tenant_id, name, permissions, builtin, created_at, updated_at)
SELECT t.id, r.column1, r.column2, 1,
       strftime('%Y-%m-%dT%H:%M:%SZ', 'now'), strftime('%Y-%m-%dT%H:%M:%SZ', 'now')
FROM tenants AS t
CROSS JOIN (VALUES
    ('admin', '["*"]'),
    ('manager', '["audit_view","chats_create","chats_view_all","members_view","orders_create","orders_edit","orders_view_all"]'),
    ('agent', '["chats_create","members_view","orders_create","orders_edit","orders_view"]'),
    ('viewer', '["orders_simple_view_all"]')
) AS r;
