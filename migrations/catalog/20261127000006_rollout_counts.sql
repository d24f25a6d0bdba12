-- Scale (#18): a rollout's progress (per phase: tenants without a job yet, jobs in flight,
-- succeeded, failed, skipped) kept as counters, so `rollouts show`, `migrate --wait` and the
-- rollout's own advancing read O(phases × outcomes × shards) rows whatever the rollout's
-- size, instead of joining every tenant of it with its job on every poll. 16 shards (by
-- tenant) so concurrent job transitions rarely wait on the same counter row.
CREATE TABLE rollout_counts (
    rollout_id uuid NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    phase      text NOT NULL,
    outcome    text NOT NULL CHECK (outcome IN ('none', 'active', 'succeeded', 'failed', 'skipped')),
    shard      smallint NOT NULL,
    n          bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (rollout_id, phase, outcome, shard)
);

-- How a rollout tenant's job counts: no job yet, in flight, or how it ended.
CREATE FUNCTION pgfleet_rollout_outcome(status text, error text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN status IS NULL THEN 'none'
        WHEN status IN ('queued', 'running') THEN 'active'
        WHEN status = 'succeeded' THEN 'succeeded'
        WHEN status = 'failed' AND error LIKE 'skipped:%' THEN 'skipped'
        ELSE 'failed'
    END
$$;

CREATE FUNCTION pgfleet_rollout_count(rollout uuid, phase text, outcome text, tenant uuid, delta int)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO rollout_counts AS c (rollout_id, phase, outcome, shard, n)
    VALUES (rollout, phase, outcome, hashtext(tenant::text) & 15, delta)
    ON CONFLICT (rollout_id, phase, outcome, shard) DO UPDATE SET n = c.n + EXCLUDED.n
$$;

-- A tenant joins a rollout, or gets its job.
CREATE FUNCTION pgfleet_count_rollout_tenants() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF OLD.job_id IS NOT DISTINCT FROM NEW.job_id AND OLD.phase = NEW.phase THEN
            RETURN NULL;
        END IF;
        PERFORM pgfleet_rollout_count(OLD.rollout_id, OLD.phase,
            (SELECT pgfleet_rollout_outcome(j.status, j.error) FROM (SELECT 1) x
               LEFT JOIN jobs j ON j.id = OLD.job_id), OLD.tenant_id, -1);
    END IF;
    PERFORM pgfleet_rollout_count(NEW.rollout_id, NEW.phase,
        (SELECT pgfleet_rollout_outcome(j.status, j.error) FROM (SELECT 1) x
           LEFT JOIN jobs j ON j.id = NEW.job_id), NEW.tenant_id, 1);
    RETURN NULL;
END $$;

CREATE TRIGGER rollout_tenants_counted AFTER INSERT OR UPDATE OF job_id, phase ON rollout_tenants
    FOR EACH ROW EXECUTE FUNCTION pgfleet_count_rollout_tenants();

-- A rollout's job moves on.
CREATE FUNCTION pgfleet_count_rollout_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    before text := pgfleet_rollout_outcome(OLD.status, OLD.error);
    after  text := pgfleet_rollout_outcome(NEW.status, NEW.error);
    rt record;
BEGIN
    IF before = after THEN
        RETURN NULL;
    END IF;
    FOR rt IN SELECT rollout_id, phase, tenant_id FROM rollout_tenants WHERE job_id = NEW.id LOOP
        PERFORM pgfleet_rollout_count(rt.rollout_id, rt.phase, before, rt.tenant_id, -1);
        PERFORM pgfleet_rollout_count(rt.rollout_id, rt.phase, after, rt.tenant_id, 1);
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_rollout_counted AFTER UPDATE OF status, error ON jobs
    FOR EACH ROW WHEN (NEW.kind = 'migrate') EXECUTE FUNCTION pgfleet_count_rollout_jobs();

-- What the catalog holds already.
INSERT INTO rollout_counts (rollout_id, phase, outcome, shard, n)
SELECT rt.rollout_id, rt.phase, pgfleet_rollout_outcome(j.status, j.error), hashtext(rt.tenant_id::text) & 15, count(*)
  FROM rollout_tenants rt LEFT JOIN jobs j ON j.id = rt.job_id
 GROUP BY 1, 2, 3, 4;
