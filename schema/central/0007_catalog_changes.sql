-- What changed in the catalog, for the readers that keep answers while it did not.
--
-- `PRAGMA data_version` moves on every commit of the file, job rows and audit entries
-- included: a busy job queue made every request re-check the catalog and drop the identity
-- reads it keeps. This counter moves only when a table those reads (and the tenant snapshot)
-- come from changes. Tables left out, on purpose: audit_log, jobs, schedules,
-- inbound_deliveries (nothing kept is read from them), tenant_changes (written only by the
-- triggers of tenants and domains, which count), schema_migrations (a migration's own changes
-- to counted tables count). A test checks that every other table has the
-- three triggers, so a new table is counted unless it is added to that list.

CREATE TABLE catalog_changes (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
) STRICT;

INSERT INTO catalog_changes (id, n) VALUES (1, 0);

CREATE TRIGGER tenants_counted_insert AFTER INSERT ON tenants BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER tenants_counted_update AFTER UPDATE ON tenants BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER tenants_counted_delete AFTER DELETE ON tenants BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER domains_counted_insert AFTER INSERT ON domains BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER domains_counted_update AFTER UPDATE ON domains BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER domains_counted_delete AFTER DELETE ON domains BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER meta_counted_insert AFTER INSERT ON meta BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER meta_counted_update AFTER UPDATE ON meta BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER meta_counted_delete AFTER DELETE ON meta BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER users_counted_insert AFTER INSERT ON users BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER users_counted_update AFTER UPDATE ON users BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER users_counted_delete AFTER DELETE ON users BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER roles_counted_insert AFTER INSERT ON roles BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER roles_counted_update AFTER UPDATE ON roles BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER roles_counted_delete AFTER DELETE ON roles BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER memberships_counted_insert AFTER INSERT ON memberships BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER memberships_counted_update AFTER UPDATE ON memberships BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER memberships_counted_delete AFTER DELETE ON memberships BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER system_admins_counted_insert AFTER INSERT ON system_admins BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER system_admins_counted_update AFTER UPDATE ON system_admins BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER system_admins_counted_delete AFTER DELETE ON system_admins BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER sessions_counted_insert AFTER INSERT ON sessions BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER sessions_counted_update AFTER UPDATE ON sessions BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER sessions_counted_delete AFTER DELETE ON sessions BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER invitations_counted_insert AFTER INSERT ON invitations BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER invitations_counted_update AFTER UPDATE ON invitations BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER invitations_counted_delete AFTER DELETE ON invitations BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER inbound_secrets_counted_insert AFTER INSERT ON inbound_secrets BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER inbound_secrets_counted_update AFTER UPDATE ON inbound_secrets BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;

CREATE TRIGGER inbound_secrets_counted_delete AFTER DELETE ON inbound_secrets BEGIN
    UPDATE catalog_changes SET n = n + 1;
END;
