-- Where each tenant's database is kept: `local`, a file under data/tenants/ (the default), or
-- `sqld`, the libSQL server namespace named by the tenant's id (docs/scale-out.md). Moving a
-- tenant (`tenantd tenants move`) flips it; identification and everything above the store read
-- the tenant the same way whichever it is.
ALTER TABLE tenants ADD COLUMN store TEXT NOT NULL DEFAULT 'local'
    CHECK (store IN ('local', 'sqld'));
