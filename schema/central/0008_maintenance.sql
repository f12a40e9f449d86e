-- Maintenance mode: one row per tenant that is down, and one ('*') when the whole server is.
-- Kept in the catalog so `tenantd down` works beside a running server: the server sees it
-- through its snapshot. `bypass` is the HMAC of the operator's secret (never the secret
-- itself), keyed by the scope, and is also the bypass cookie's value.

CREATE TABLE maintenance (
    scope       TEXT PRIMARY KEY NOT NULL,
    retry_after INTEGER CHECK (retry_after IS NULL OR retry_after >= 0),
    allow_ips   TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(allow_ips)),
    bypass      TEXT,
    since       TEXT NOT NULL
) STRICT;

CREATE TRIGGER maintenance_counted_insert AFTER INSERT ON maintenance BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER maintenance_counted_update AFTER UPDATE ON maintenance BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER maintenance_counted_delete AFTER DELETE ON maintenance BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;
