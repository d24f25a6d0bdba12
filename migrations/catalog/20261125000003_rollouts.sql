-- Migration rollouts: one recorded migration set applied to many tenants.
CREATE TABLE rollouts (
    id              uuid PRIMARY KEY,
    target_version  bigint NOT NULL,
    canary          integer NOT NULL DEFAULT 0 CHECK (canary >= 0),
    max_failures    integer CHECK (max_failures >= 1),
    -- Migrations of this rollout running at once on one tenant server, across all workers.
    server_concurrency integer NOT NULL CHECK (server_concurrency >= 1),
    -- running: jobs in flight; halted: max_failures reached or a canary failed; done: every
    -- tenant job finished (some may have failed).
    status          text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'halted', 'done')),
    halted_reason   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX rollouts_created ON rollouts (created_at DESC);

-- The exact migration set of a rollout: the SQL workers apply, whatever is on their disk.
CREATE TABLE rollout_migrations (
    rollout_id  uuid NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    version     bigint NOT NULL,
    name        text NOT NULL,
    file_name   text NOT NULL,
    checksum    bytea NOT NULL,
    sql         text NOT NULL,
    PRIMARY KEY (rollout_id, version)
);

-- Which tenants a rollout covers, in which phase, and the job doing it.
CREATE TABLE rollout_tenants (
    rollout_id  uuid NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    phase       text NOT NULL CHECK (phase IN ('canary', 'main')),
    job_id      uuid REFERENCES jobs (id),
    PRIMARY KEY (rollout_id, tenant_id)
);
CREATE INDEX rollout_tenants_job ON rollout_tenants (job_id);

-- Every migration applied to every tenant (mirrors each tenant's _pgfleet_migrations), so
-- drift can be checked against the fleet without connecting to it.
CREATE TABLE tenant_migrations (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    version     bigint NOT NULL,
    checksum    bytea NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, version)
);
CREATE INDEX tenant_migrations_version ON tenant_migrations (version, checksum);
