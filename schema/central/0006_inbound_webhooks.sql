-- Inbound webhooks: each tenant's secret per source, and the deliveries already accepted.
--
-- In the catalog, not in the tenant's file: a request is verified before anything of the tenant
-- is opened, so a request that is not signed (or names a tenant at random) never opens a
-- tenant's pool, and the tenant lookup and the secret come from one place. The secret itself is
-- kept as text (`whsec_...`): checking an HMAC needs the key, not a digest of it.

CREATE TABLE inbound_secrets (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    source     TEXT NOT NULL CHECK (length(source) BETWEEN 1 AND 64),
    secret     TEXT NOT NULL CHECK (secret GLOB 'whsec_?*'),
    -- Unix seconds: when the first secret was made, and when it was last replaced.
    created_at INTEGER NOT NULL,
    rotated_at INTEGER,
    PRIMARY KEY (tenant_id, source)
) STRICT;

-- A webhook-id accepted once is answered with the same job again, and enqueues nothing more.
-- Kept for a week (pruned as new ones arrive): longer than senders keep retrying.
CREATE TABLE inbound_deliveries (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    source      TEXT NOT NULL,
    webhook_id  TEXT NOT NULL CHECK (length(webhook_id) BETWEEN 1 AND 256),
    job_id      INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, source, webhook_id)
) STRICT, WITHOUT ROWID;

CREATE INDEX inbound_deliveries_by_time ON inbound_deliveries(received_at);
