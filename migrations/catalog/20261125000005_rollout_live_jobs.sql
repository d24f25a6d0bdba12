-- A worker asks after every migrate job it finishes whether its rollout still has jobs to
-- run (if not, it closes the rollout). Answered from this index of live migrate jobs only,
-- so the question costs the same whatever the rollout's size or the job history; joining
-- rollout_tenants to jobs for it made each answer scan the rollout (or all of `jobs`).
CREATE INDEX jobs_live_by_rollout ON jobs ((payload ->> 'rollout'))
    WHERE kind = 'migrate' AND status IN ('queued', 'running');

-- Workers' sweeps look for running rollouts that nobody moved on (see
-- Catalog::rollouts_without_live_jobs); rollouts pile up, running ones are few.
CREATE INDEX rollouts_running ON rollouts (id) WHERE status = 'running';
