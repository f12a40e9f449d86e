-- Which tenants changed, in commit order. A server keeps tenants and domains in memory and
-- reloads them when the catalog changes; most catalog commits (sessions, audit entries, users)
-- touch neither, and a tenant change touches one tenant. With this log a server reads only the
-- tenants named since its last look, instead of every tenant on every commit.
--
-- Triggers fill it, so every writer is covered: the server, the CLI, an operator's sqlite3.
-- AUTOINCREMENT: a `seq` is never handed out twice, even after old entries are pruned, so a
-- reader that finds the log starting past its last `seq` knows it missed entries and reloads
-- everything.

CREATE TABLE tenant_changes (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL
) STRICT;

CREATE TRIGGER tenants_logged_insert AFTER INSERT ON tenants BEGIN
    INSERT INTO tenant_changes (tenant_id) VALUES (NEW.id);
END;

CREATE TRIGGER tenants_logged_update AFTER UPDATE ON tenants BEGIN
    INSERT INTO tenant_changes (tenant_id) VALUES (OLD.id);
    INSERT INTO tenant_changes (tenant_id) SELECT NEW.id WHERE NEW.id <> OLD.id;
END;

CREATE TRIGGER tenants_logged_delete AFTER DELETE ON tenants BEGIN
    INSERT INTO tenant_changes (tenant_id) VALUES (OLD.id);
END;

CREATE TRIGGER domains_logged_insert AFTER INSERT ON domains BEGIN
    INSERT INTO tenant_changes (tenant_id) VALUES (NEW.tenant_id);
END;

CREATE TRIGGER domains_logged_update AFTER UPDATE ON domains BEGIN
    INSERT INTO tenant_changes (tenant_id) VALUES (OLD.tenant_id);
    INSERT INTO tenant_changes (tenant_id)
        SELECT NEW.tenant_id WHERE NEW.tenant_id <> OLD.tenant_id;
END;

CREATE TRIGGER domains_logged_delete AFTER DELETE ON domains BEGIN
    INSERT INTO tenant_changes (tenant_id) VALUES (OLD.tenant_id);
END;

-- The log keeps its last 10,000 to 11,000 entries: a server more than that many tenant changes
-- behind reloads everything, which is what it would have done without the log.
CREATE TRIGGER tenant_changes_pruned AFTER INSERT ON tenant_changes
WHEN NEW.seq % 1000 = 0 BEGIN
    DELETE FROM tenant_changes WHERE seq <= NEW.seq - 10000;
END;
