-- Plans and subscriptions. A plan names its limits (`{"orders": 100}`; a limit not named is
-- unlimited) and its features (`{"webhooks": false}`; a feature not named is on, so a switch
-- added later takes nothing away from an existing plan). Every tenant has exactly one current
-- subscription: the row is the tenant's, replaced in place, its history is in the audit log.
-- Existing tenants start on `unlimited`, so an upgrade changes nothing for them.

CREATE TABLE plans (
    slug        TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    price_minor INTEGER NOT NULL DEFAULT 0 CHECK (price_minor >= 0),
    currency    TEXT NOT NULL DEFAULT 'EUR' CHECK (length(currency) = 3),
    features    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(features) AND json_type(features) = 'object'),
    limits      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(limits) AND json_type(limits) = 'object'),
    active      INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1))
) STRICT;

INSERT INTO plans (slug, name, price_minor, currency, features, limits) VALUES
    ('free', 'Free', 0, 'EUR', '{"webhooks": false, "exports": false}',
     '{"members": 3, "orders": 100, "chats": 5, "messages_per_day": 500, "webhook_endpoints": 0}'),
    ('team', 'Team', 2900, 'EUR', '{"webhooks": true, "exports": true}',
     '{"members": 25, "orders": 10000, "chats": 100, "messages_per_day": 20000, "webhook_endpoints": 5}'),
    ('unlimited', 'Unlimited', 0, 'EUR', '{"webhooks": true, "exports": true}', '{}');

CREATE TABLE subscriptions (
    tenant_id            TEXT PRIMARY KEY NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    plan                 TEXT NOT NULL REFERENCES plans(slug),
    status               TEXT NOT NULL DEFAULT 'active'
                         CHECK (status IN ('trialing', 'active', 'past_due', 'canceled')),
    -- Unix seconds.
    current_period_start INTEGER,
    current_period_end   INTEGER,
    trial_end            INTEGER,
    canceled_at          INTEGER,
    external_ref         TEXT,
    metadata             TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    updated_at           INTEGER NOT NULL
) STRICT;

CREATE INDEX subscriptions_by_plan ON subscriptions(plan);

INSERT INTO subscriptions (tenant_id, plan, status, current_period_start, updated_at)
    SELECT id, 'unlimited', 'active', CAST(strftime('%s', 'now') AS INTEGER),
           CAST(strftime('%s', 'now') AS INTEGER)
    FROM tenants;

CREATE TRIGGER plans_counted_insert AFTER INSERT ON plans BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER plans_counted_update AFTER UPDATE ON plans BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER plans_counted_delete AFTER DELETE ON plans BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER subscriptions_counted_insert AFTER INSERT ON subscriptions BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER subscriptions_counted_update AFTER UPDATE ON subscriptions BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER subscriptions_counted_delete AFTER DELETE ON subscriptions BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;
