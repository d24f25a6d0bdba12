-- pgfleet catalog: the source of truth for tenants, the servers they live on and every job.
CREATE EXTENSION IF NOT EXISTS citext;

-- Key-value facts about this install (e.g. a check value proving workers share the secret key).
CREATE TABLE settings (
    name        text PRIMARY KEY,
    value       bytea NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Postgres servers that host tenant databases. The admin URL holds a password, so it is
-- stored encrypted with the install's secret key; `display_url` is the redacted form.
CREATE TABLE tenant_servers (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                  citext NOT NULL UNIQUE,
    region                text,
    display_url           text NOT NULL,
    admin_url_ciphertext  bytea NOT NULL,
    is_default            boolean NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX tenant_servers_one_default ON tenant_servers (is_default) WHERE is_default;

CREATE TABLE tenants (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug                 citext NOT NULL UNIQUE
                         CHECK (slug ~ '^[a-z][a-z0-9-]{1,61}[a-z0-9]$'),
    status               text NOT NULL DEFAULT 'provisioning'
                         CHECK (status IN ('provisioning', 'active', 'deleting', 'deleted')),
    server_id            uuid NOT NULL REFERENCES tenant_servers (id),
    region               text,
    database_name        text NOT NULL,
    role_name            text NOT NULL,
    -- nonce || AES-256-GCM ciphertext of the role's password; generated once, before the
    -- role exists, so an interrupted provision reuses it.
    password_ciphertext  bytea NOT NULL,
    connection_limit     integer NOT NULL CHECK (connection_limit >= -1),
    schema_version       bigint,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (server_id, database_name),
    UNIQUE (server_id, role_name)
);
CREATE INDEX tenants_server_id ON tenants (server_id);

CREATE TABLE jobs (
    id                uuid PRIMARY KEY,
    -- Same key => same job, done once. Producers that give no key get a fresh one.
    idempotency_key   text NOT NULL UNIQUE,
    kind              text NOT NULL,
    tenant            citext NOT NULL,
    payload           jsonb NOT NULL DEFAULT '{}',
    status            text NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead')),
    attempts          integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL CHECK (max_attempts >= 1),
    -- Not before this time (retry backoff).
    run_after         timestamptz NOT NULL DEFAULT now(),
    -- Lease of the worker running the job; every outcome write is fenced by `epoch`.
    lease_owner       text,
    lease_expires_at  timestamptz,
    epoch             bigint NOT NULL DEFAULT 0,
    -- Last time a message for this job was confirmed by the broker; the sweep re-publishes
    -- queued jobs whose message may have been lost.
    dispatched_at     timestamptz,
    dispatch_count    integer NOT NULL DEFAULT 0,
    error             text,
    outcome           jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz
);
CREATE INDEX jobs_due ON jobs (run_after) WHERE status = 'queued';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX jobs_tenant_created ON jobs (tenant, created_at DESC);
CREATE INDEX jobs_created ON jobs (created_at DESC);
CREATE INDEX jobs_status_created ON jobs (status, created_at DESC);

-- Messages that could not be understood. The copy in `<ns>.dead` carries the same reason
-- in its `x-pgfleet-reason` header; this row makes it queryable.
CREATE TABLE dead_letters (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    queue         text NOT NULL,
    reason        text NOT NULL,
    body          bytea NOT NULL,
    job_id        uuid REFERENCES jobs (id) ON DELETE SET NULL,
    received_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_received ON dead_letters (received_at DESC);
