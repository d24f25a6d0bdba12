-- Scale (#18): the counters (`job_counts`, `job_duration_counts`, `rollout_counts`) were
-- kept by ROW triggers. A statement touching many jobs then updated the same few counter
-- rows once per job, and each of those updates had to step over that statement's earlier
-- versions of the row (none can be pruned while the statement runs): quadratic in the
-- statement's size — a 1,000,000-row INSERT into `jobs` ran for more than 14 minutes, and
-- a rollout phase records all of its tenants in one statement. Statement triggers with
-- transition tables add each statement's rows up first and touch every counter row once.
--
-- UPDATE triggers with transition tables cannot name columns, so the jobs UPDATE trigger
-- fires for every UPDATE statement (lease renewals too) and finds nothing to count there.
-- Counter rows are upserted in key order, so concurrent statements lock them in one order.

DROP TRIGGER jobs_counted ON jobs;
DROP TRIGGER jobs_rollout_counted ON jobs;
DROP TRIGGER rollout_tenants_counted ON rollout_tenants;
DROP FUNCTION pgfleet_count_jobs();
DROP FUNCTION pgfleet_count_rollout_jobs();
DROP FUNCTION pgfleet_count_rollout_tenants();
DROP FUNCTION pgfleet_rollout_count(uuid, text, text, uuid, int);

-- Job counts by kind/status: rows that arrive (+1) and rows that leave (-1), per statement.
CREATE FUNCTION pgfleet_count_jobs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts AS c (kind, status, shard, n)
    SELECT kind, status, hashtext(id::text) & 15, count(*) FROM new_jobs
     GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (kind, status, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE FUNCTION pgfleet_count_jobs_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts AS c (kind, status, shard, n)
    SELECT kind, status, hashtext(id::text) & 15, -count(*) FROM old_jobs
     GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (kind, status, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END $$;

-- An UPDATE statement: status moves (job_counts), first finishes (the duration histogram),
-- and a migrate job's rollout outcome moving (rollout_counts of the tenants it runs for).
CREATE FUNCTION pgfleet_count_jobs_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts AS c (kind, status, shard, n)
    SELECT kind, status, shard, sum(delta) FROM (
        SELECT o.kind, o.status, hashtext(o.id::text) & 15 AS shard, -1 AS delta
          FROM old_jobs o JOIN new_jobs n ON n.id = o.id
         WHERE o.status IS DISTINCT FROM n.status
        UNION ALL
        SELECT n.kind, n.status, hashtext(n.id::text) & 15, 1
          FROM old_jobs o JOIN new_jobs n ON n.id = o.id
         WHERE o.status IS DISTINCT FROM n.status) moves
     GROUP BY 1, 2, 3 HAVING sum(delta) <> 0 ORDER BY 1, 2, 3
    ON CONFLICT (kind, status, shard) DO UPDATE SET n = c.n + EXCLUDED.n;

    INSERT INTO job_duration_counts AS c (kind, le, shard, n, seconds)
    SELECT f.kind, b.le, f.shard, count(*), sum(f.took) FROM (
        SELECT n.kind, hashtext(n.id::text) & 15 AS shard,
               extract(epoch FROM n.finished_at - n.started_at) AS took
          FROM old_jobs o JOIN new_jobs n ON n.id = o.id
         WHERE n.finished_at IS NOT NULL AND o.finished_at IS NULL AND n.started_at IS NOT NULL) f
      JOIN job_duration_buckets b ON f.took <= b.le
     GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (kind, le, shard) DO UPDATE SET n = c.n + EXCLUDED.n, seconds = c.seconds + EXCLUDED.seconds;

    INSERT INTO rollout_counts AS c (rollout_id, phase, outcome, shard, n)
    SELECT rollout_id, phase, outcome, shard, sum(delta) FROM (
        SELECT rt.rollout_id, rt.phase, x.outcome, hashtext(rt.tenant_id::text) & 15 AS shard, x.delta
          FROM (SELECT n.id,
                       pgfleet_rollout_outcome(o.status, o.error) AS before,
                       pgfleet_rollout_outcome(n.status, n.error) AS after
                  FROM old_jobs o JOIN new_jobs n ON n.id = o.id
                 WHERE n.kind = 'migrate') moved
          JOIN rollout_tenants rt ON rt.job_id = moved.id
          CROSS JOIN LATERAL (VALUES (moved.before, -1), (moved.after, 1)) AS x (outcome, delta)
         WHERE moved.before <> moved.after) moves
     GROUP BY 1, 2, 3, 4 HAVING sum(delta) <> 0 ORDER BY 1, 2, 3, 4
    ON CONFLICT (rollout_id, phase, outcome, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_counted_inserted AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION pgfleet_count_jobs_inserted();
CREATE TRIGGER jobs_counted_deleted AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION pgfleet_count_jobs_deleted();
CREATE TRIGGER jobs_counted_updated AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION pgfleet_count_jobs_updated();

-- Tenants join a rollout (outcome of the job they come with, usually none), or get a job or
-- a phase: -1 where they were counted, +1 where they are now.
CREATE FUNCTION pgfleet_count_rollout_tenants_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollout_counts AS c (rollout_id, phase, outcome, shard, n)
    SELECT nt.rollout_id, nt.phase, pgfleet_rollout_outcome(j.status, j.error),
           hashtext(nt.tenant_id::text) & 15, count(*)
      FROM new_tenants nt LEFT JOIN jobs j ON j.id = nt.job_id
     GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (rollout_id, phase, outcome, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE FUNCTION pgfleet_count_rollout_tenants_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollout_counts AS c (rollout_id, phase, outcome, shard, n)
    SELECT rollout_id, phase, outcome, shard, sum(delta) FROM (
        SELECT o.rollout_id, o.phase, pgfleet_rollout_outcome(oj.status, oj.error) AS outcome,
               hashtext(o.tenant_id::text) & 15 AS shard, -1 AS delta
          FROM old_tenants o JOIN new_tenants nt USING (rollout_id, tenant_id)
          LEFT JOIN jobs oj ON oj.id = o.job_id
         WHERE o.job_id IS DISTINCT FROM nt.job_id OR o.phase <> nt.phase
        UNION ALL
        SELECT nt.rollout_id, nt.phase, pgfleet_rollout_outcome(nj.status, nj.error),
               hashtext(nt.tenant_id::text) & 15, 1
          FROM old_tenants o JOIN new_tenants nt USING (rollout_id, tenant_id)
          LEFT JOIN jobs nj ON nj.id = nt.job_id
         WHERE o.job_id IS DISTINCT FROM nt.job_id OR o.phase <> nt.phase) moves
     GROUP BY 1, 2, 3, 4 HAVING sum(delta) <> 0 ORDER BY 1, 2, 3, 4
    ON CONFLICT (rollout_id, phase, outcome, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE TRIGGER rollout_tenants_counted_inserted AFTER INSERT ON rollout_tenants
    REFERENCING NEW TABLE AS new_tenants
    FOR EACH STATEMENT EXECUTE FUNCTION pgfleet_count_rollout_tenants_inserted();
CREATE TRIGGER rollout_tenants_counted_updated AFTER UPDATE ON rollout_tenants
    REFERENCING OLD TABLE AS old_tenants NEW TABLE AS new_tenants
    FOR EACH STATEMENT EXECUTE FUNCTION pgfleet_count_rollout_tenants_updated();
