-- Backups: per-tenant settings, and one row per backup attempt's object.
ALTER TABLE tenants
    ADD COLUMN backup_schedule text NOT NULL DEFAULT '0 0 * * *',
    ADD COLUMN retention_days integer NOT NULL DEFAULT 7 CHECK (retention_days >= 0),
    ADD COLUMN keep_min integer NOT NULL DEFAULT 1 CHECK (keep_min >= 0);

CREATE TABLE backups (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    job_id         uuid REFERENCES jobs (id) ON DELETE SET NULL,
    -- Object key in the backup store; unique per attempt (it carries the start time).
    key            text NOT NULL UNIQUE,
    -- running: being written; succeeded: stored and verified; failed: no object under
    -- `key`; pruning: chosen for deletion (object may still exist); pruned: object deleted.
    status         text NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'succeeded', 'failed', 'pruning', 'pruned')),
    bytes          bigint,
    raw_bytes      bigint,
    sha256         text,
    compression    text NOT NULL DEFAULT 'gzip',
    pg_dump        text,
    duration_ms    bigint,
    error          text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    pruned_at      timestamptz
);
CREATE INDEX backups_tenant_created ON backups (tenant_id, created_at DESC);
CREATE INDEX backups_job ON backups (job_id);
