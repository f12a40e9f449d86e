-- foreign_keys: off
-- Background jobs and their schedules, and the tenant status `provisioning`.
--
-- Tenants: a tenant created asynchronously is `provisioning` until its job has made its file.
-- SQLite cannot change a CHECK constraint in place, so the table is rebuilt (with foreign keys
-- off: dropping the old table must not cascade to domains, memberships and the rest) and its
-- triggers made again.

CREATE TABLE tenants_rebuilt (
    id         TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    slug       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'active'
               CHECK (status IN ('active', 'suspended', 'deleted', 'provisioning')),
    settings   TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(settings)),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted_at TEXT,
    -- A deleted tenant always says when; a live one never does.
    CHECK ((status = 'deleted') = (deleted_at IS NOT NULL))
) STRICT;

INSERT INTO tenants_rebuilt (id, slug, name, status, settings, created_at, updated_at, deleted_at)
    SELECT id, slug, name, status, settings, created_at, updated_at, deleted_at FROM tenants;
DROP TABLE tenants;
ALTER TABLE tenants_rebuilt RENAME TO tenants;

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

-- Jobs. Times here are integer Unix milliseconds, unlike the
-- RFC 3339 text elsewhere: a worker compares run_at and lease expiry on every claim, and the
-- enqueue-to-start delay is measured in milliseconds.

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    -- No foreign key: a job names a tenant that may be purged meanwhile, and then fails with
    -- a clear error instead of vanishing with it.
    tenant_id        TEXT CHECK (tenant_id IS NULL OR length(tenant_id) = 36),
    queue            TEXT NOT NULL,
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(payload)),
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'done', 'failed', 'discarded')),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    run_at           INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    last_error       TEXT,
    unique_key       TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    -- A running job always has a lease; no other does.
    CHECK ((status = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
) STRICT;

-- A second job with the key of a pending or running one is not enqueued; finished ones free it.
CREATE UNIQUE INDEX jobs_unique_live ON jobs(unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('pending', 'running');
-- What a worker of a queue claims next.
CREATE INDEX jobs_due ON jobs(queue, run_at) WHERE status = 'pending';
-- Leases to reclaim after a worker died.
CREATE INDEX jobs_leased ON jobs(lease_expires_at) WHERE status = 'running';
-- Pruning and listings.
CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_by_tenant ON jobs(tenant_id, id);

-- Recurring jobs. Whoever enqueues a due time advances next_run_at in the same transaction, and
-- the job's unique key names the schedule and that due time: several processes on one data
-- directory enqueue it once.
CREATE TABLE schedules (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT REFERENCES tenants(id) ON DELETE CASCADE,
    cron         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(payload)),
    next_run_at  INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
) STRICT;

CREATE INDEX schedules_due ON schedules(next_run_at);
