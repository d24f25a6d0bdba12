-- A job an operator cancelled (`pgfleet jobs cancel`: error `cancelled: …`) is not a
-- failure to notify about, like the jobs a halted rollout skipped.
DROP TRIGGER jobs_webhook ON jobs;
CREATE TRIGGER jobs_webhook AFTER UPDATE OF status ON jobs FOR EACH ROW
    WHEN (NEW.status IN ('failed', 'dead') AND OLD.status IS DISTINCT FROM NEW.status
          AND coalesce(NEW.error, '') NOT LIKE 'skipped:%'
          AND coalesce(NEW.error, '') NOT LIKE 'cancelled:%')
    EXECUTE FUNCTION jobs_webhook_event();
