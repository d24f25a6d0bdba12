-- Backups of a tenant's dev copies (branches with backups asked for): rows of the tenant
-- (its prefix, its retention) naming the branch. They never count as the tenant's own
-- backups: not its newest good backup, not a restore's default, not its keep-min.
ALTER TABLE backups ADD COLUMN branch text;

DROP TRIGGER backups_last_good ON backups;
CREATE TRIGGER backups_last_good AFTER INSERT OR UPDATE OF status ON backups
    FOR EACH ROW WHEN (NEW.status = 'succeeded' AND NEW.finished_at IS NOT NULL AND NEW.branch IS NULL)
    EXECUTE FUNCTION tenants_last_good_backup();
