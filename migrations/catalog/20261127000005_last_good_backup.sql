-- Scale (#18): each tenant's newest good backup, kept on the tenant row, so /metrics
-- summarises backup ages from `tenants` alone (buckets, overdue, the N oldest) instead of
-- aggregating every backup row per scrape.
-- `backup_due_since`: the slot of the oldest scheduled backup not yet fulfilled (set by the
-- scheduler, cleared by the first good backup taken at or after it).
ALTER TABLE tenants ADD COLUMN last_good_backup_at timestamptz,
                    ADD COLUMN backup_due_since timestamptz;

UPDATE tenants t SET last_good_backup_at = b.finished
  FROM (SELECT tenant_id, max(finished_at) AS finished FROM backups
         WHERE status = 'succeeded' GROUP BY tenant_id) b
 WHERE b.tenant_id = t.id;

CREATE FUNCTION tenants_last_good_backup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tenants
       SET last_good_backup_at = greatest(last_good_backup_at, NEW.finished_at),
           backup_due_since = CASE WHEN backup_due_since <= NEW.created_at THEN NULL
                                   ELSE backup_due_since END
     WHERE id = NEW.tenant_id;
    RETURN NULL;
END $$;

CREATE TRIGGER backups_last_good AFTER INSERT OR UPDATE OF status ON backups
    FOR EACH ROW WHEN (NEW.status = 'succeeded' AND NEW.finished_at IS NOT NULL)
    EXECUTE FUNCTION tenants_last_good_backup();

CREATE INDEX tenants_active_last_good_backup ON tenants (last_good_backup_at NULLS FIRST)
    WHERE status = 'active';
