-- Web console (#16): signed-in sessions, the record of what operators did, the history of
-- a job's failed attempts, and rollouts an operator resumed.

-- A console session: the cookie holds a random secret; only its SHA-256 is kept, so a
-- catalog read does not hand out sessions. `role`: admin acts, viewer only looks.
CREATE TABLE console_sessions (
    id_digest     bytea PRIMARY KEY,
    role          text NOT NULL CHECK (role IN ('admin', 'viewer')),
    operator      text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);

-- Every console action, who asked for it and how it ended (kept like job history).
CREATE TABLE console_actions (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    at         timestamptz NOT NULL DEFAULT now(),
    operator   text NOT NULL,
    role       text NOT NULL,
    action     text NOT NULL,
    target     text NOT NULL,
    ok         boolean NOT NULL,
    -- What it did (e.g. the job it queued) or why it was refused.
    result     text NOT NULL
);
CREATE INDEX console_actions_at ON console_actions (at DESC);

-- A job's attempts that ended in an error, with the worker that ran them. Written by a
-- trigger only when an attempt fails, so the happy path costs nothing more; the job row
-- itself carries the last attempt's timings.
CREATE TABLE job_attempts (
    job_id      uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    worker      text,
    started_at  timestamptz,
    ended_at    timestamptz NOT NULL DEFAULT now(),
    status      text NOT NULL,
    error       text NOT NULL
);
CREATE INDEX job_attempts_job ON job_attempts (job_id, ended_at);

CREATE FUNCTION pgfleet_record_failed_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_attempts (job_id, attempt, worker, started_at, status, error)
    VALUES (NEW.id, NEW.attempts, OLD.lease_owner, OLD.started_at, NEW.status, left(NEW.error, 4096));
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_failed_attempt AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (OLD.status = 'running' AND NEW.status <> 'running' AND NEW.error IS NOT NULL)
    EXECUTE FUNCTION pgfleet_record_failed_attempt();

-- Times an operator resumed a halted rollout: the jobs made for skipped tenants are keyed
-- with it, so each resume makes new ones and asking twice does not.
ALTER TABLE rollouts ADD COLUMN resumes integer NOT NULL DEFAULT 0;

-- The overview's (and /metrics') oldest last backups order by (age, slug): with the slug in
-- the index the first rows are read in order instead of sorting every active tenant (found
-- at 100k tenants, all never backed up: 88 ms → under 1 ms).
DROP INDEX tenants_active_last_good_backup;
CREATE INDEX tenants_active_last_good_backup ON tenants (last_good_backup_at NULLS FIRST, slug)
    WHERE status = 'active';
