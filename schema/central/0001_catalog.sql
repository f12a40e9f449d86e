-- The catalog: which tenants exist, how requests reach them, server secrets.
-- Timestamps are RFC 3339 UTC text ("2024-05-01T12:00:00Z"): sortable and readable.

CREATE TABLE tenants (
    id         TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    slug       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'active'
               CHECK (status IN ('active', 'suspended', 'deleted')),
    settings   TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(settings)),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted_at TEXT,
    -- A deleted tenant always says when; a live one never does.
    CHECK ((status = 'deleted') = (deleted_at IS NOT NULL))
) STRICT;

CREATE TABLE domains (
    domain     TEXT PRIMARY KEY NOT NULL,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    is_primary INTEGER NOT NULL DEFAULT 0 CHECK (is_primary IN (0, 1))
) STRICT;

CREATE INDEX domains_by_tenant ON domains(tenant_id);
CREATE UNIQUE INDEX domains_one_primary ON domains(tenant_id) WHERE is_primary = 1;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;
