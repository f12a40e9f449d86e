-- Outbound webhooks: the endpoints a tenant's admins registered, and the log of
-- every delivery attempt to them. In the tenant's own file, like everything of
-- the tenant's, so no query can reach another tenant's endpoints. Times of the
-- log are RFC 3339 text like the workspace's; the counters that drive disabling
-- and rotation are unix seconds, compared with the clock.

CREATE TABLE webhook_endpoints (
    id                    INTEGER PRIMARY KEY,
    url                   TEXT NOT NULL CHECK (length(url) BETWEEN 1 AND 2000),
    description           TEXT NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    -- A JSON array of event types, or ["*"] for every one.
    events                TEXT NOT NULL,
    -- whsec_ + base64: the HMAC key is needed to sign, so it is kept as given.
    secret                TEXT NOT NULL,
    -- The secret before the last rotation, still signing until then.
    previous_secret       TEXT,
    previous_secret_until INTEGER,
    enabled               INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    disabled_reason       TEXT,
    -- Failed attempts in a row, and when the first of them was.
    failures              INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
    failing_since         INTEGER,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL
) STRICT;

CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY,
    endpoint_id      INTEGER NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event            TEXT NOT NULL,
    webhook_id       TEXT NOT NULL,
    attempt          INTEGER NOT NULL CHECK (attempt >= 1),
    -- None when no answer came (refused, unreachable, timed out).
    status_code      INTEGER,
    duration_ms      INTEGER NOT NULL CHECK (duration_ms >= 0),
    response_excerpt TEXT NOT NULL DEFAULT '',
    error            TEXT,
    at               TEXT NOT NULL
) STRICT;

-- Newest-first pages of one endpoint's log, and trimming it.
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);
