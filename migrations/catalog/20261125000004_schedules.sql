-- Scheduler: the last scheduled backup slot handled per tenant. A scheduler enqueues a
-- tenant's backup for the newest slot after this one and advances it in the same statement,
-- so several replicas enqueue each slot once, and a scheduler back from downtime catches up
-- with one backup, not one per missed slot. NULL: nothing handled yet (slots after the
-- tenant's creation count).
ALTER TABLE tenants ADD COLUMN backup_scheduled_through timestamptz;

-- Metrics: the newest good backup of each tenant.
CREATE INDEX backups_good ON backups (tenant_id, finished_at) WHERE status = 'succeeded';
