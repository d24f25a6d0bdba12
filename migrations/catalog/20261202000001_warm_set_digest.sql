-- Warm pool (#17): which migration set a ready pool database holds, as a digest of its
-- (version, checksum) pairs. A signup claiming an entry built to the newest set records
-- that set as the tenant's migrations without connecting to the database; an entry
-- without a digest (built before this column) is checked over a tenant connection.
ALTER TABLE warm_databases ADD COLUMN set_digest bytea;
