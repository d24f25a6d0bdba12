-- Metrics read maintained counters instead of scanning `jobs` on every scrape: a scrape
-- costs O(kinds × statuses × shards) whatever the job history. Counters are spread over 16
-- shards (by job id) so concurrent job transitions rarely wait on the same counter row.

-- Jobs in the catalog now, by kind and status (a gauge: history pruning decrements it).
CREATE TABLE job_counts (
    kind    text NOT NULL,
    status  text NOT NULL,
    shard   smallint NOT NULL,
    n       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, status, shard)
);

-- Finished jobs' durations (first start → end), cumulative: a Prometheus histogram, never
-- decremented (pruning old jobs does not un-happen them). `le` is the bucket's upper bound
-- in seconds; 'Infinity' counts every finished job.
CREATE TABLE job_duration_counts (
    kind     text NOT NULL,
    le       double precision NOT NULL,
    shard    smallint NOT NULL,
    n        bigint NOT NULL DEFAULT 0,
    seconds  double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, le, shard)
);

-- The histogram's buckets (Catalog's DURATION_BUCKETS).
CREATE TABLE job_duration_buckets (le double precision PRIMARY KEY);
INSERT INTO job_duration_buckets (le)
SELECT unnest(ARRAY[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 'Infinity']::float8[]);

CREATE FUNCTION pgfleet_count_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    which smallint;
    took double precision;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND (TG_OP = 'DELETE' OR OLD.status IS DISTINCT FROM NEW.status) THEN
        which := hashtext(OLD.id::text) & 15;
        INSERT INTO job_counts AS c (kind, status, shard, n) VALUES (OLD.kind, OLD.status, which, -1)
        ON CONFLICT (kind, status, shard) DO UPDATE SET n = c.n - 1;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status) THEN
        which := hashtext(NEW.id::text) & 15;
        INSERT INTO job_counts AS c (kind, status, shard, n) VALUES (NEW.kind, NEW.status, which, 1)
        ON CONFLICT (kind, status, shard) DO UPDATE SET n = c.n + 1;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.finished_at IS NOT NULL AND OLD.finished_at IS NULL AND NEW.started_at IS NOT NULL THEN
        took := extract(epoch FROM NEW.finished_at - NEW.started_at);
        which := hashtext(NEW.id::text) & 15;
        INSERT INTO job_duration_counts AS c (kind, le, shard, n, seconds)
        SELECT NEW.kind, b.le, which, 1, took FROM job_duration_buckets b WHERE took <= b.le
        ON CONFLICT (kind, le, shard) DO UPDATE SET n = c.n + 1, seconds = c.seconds + EXCLUDED.seconds;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_counted AFTER INSERT OR DELETE OR UPDATE OF status, finished_at ON jobs
    FOR EACH ROW EXECUTE FUNCTION pgfleet_count_jobs();

-- What the catalog holds already.
INSERT INTO job_counts (kind, status, shard, n)
SELECT kind, status, hashtext(id::text) & 15, count(*) FROM jobs GROUP BY 1, 2, 3;
INSERT INTO job_duration_counts (kind, le, shard, n, seconds)
SELECT j.kind, b.le, hashtext(j.id::text) & 15, count(*), sum(extract(epoch FROM j.finished_at - j.started_at))
  FROM jobs j JOIN job_duration_buckets b ON extract(epoch FROM j.finished_at - j.started_at) <= b.le
 WHERE j.finished_at IS NOT NULL AND j.started_at IS NOT NULL
 GROUP BY 1, 2, 3;

-- History is pruned by finish time (Catalog::prune_history).
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX rollouts_finished ON rollouts (finished_at) WHERE finished_at IS NOT NULL;
