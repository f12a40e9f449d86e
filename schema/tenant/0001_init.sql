-- Facts about the tenant as seeded at provisioning (id, slug, name, created_at),
-- so a lone tenant file still says whose it is.

CREATE TABLE tenant_meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;
