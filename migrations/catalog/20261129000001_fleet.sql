-- A fleet of self-hosted servers: capacity and draining for placement, tenants moved
-- between servers, suspended, limited per tenant, and copied for dev/test.

ALTER TABLE tenant_servers
    -- Tenants (not deleted) the server may hold; NULL: no limit.
    ADD COLUMN capacity integer CHECK (capacity >= 0),
    -- active: takes new tenants; draining: keeps its tenants, takes no new ones;
    -- removed: kept only because deleted tenants' records point at it (never listed or used).
    ADD COLUMN status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'draining', 'removed'));

ALTER TABLE tenants
    DROP CONSTRAINT tenants_status_check,
    ADD CONSTRAINT tenants_status_check
        CHECK (status IN ('provisioning', 'active', 'suspended', 'moving', 'deleting', 'deleted')),
    -- Set while the tenant is suspended, whatever its status says meanwhile (a delete of a
    -- suspended tenant that fails hands it back suspended, not active).
    ADD COLUMN suspended_at timestamptz,
    -- Role-level settings (NULL: the server's default), as integers so nothing a user
    -- types reaches SQL text.
    ADD COLUMN statement_timeout_ms integer CHECK (statement_timeout_ms >= 0),
    ADD COLUMN idle_in_transaction_timeout_ms integer CHECK (idle_in_transaction_timeout_ms >= 0),
    ADD COLUMN work_mem_kb integer CHECK (work_mem_kb >= 64),
    -- Reported when exceeded, never enforced by deleting anything.
    ADD COLUMN storage_quota_bytes bigint CHECK (storage_quota_bytes >= 0),
    ADD COLUMN storage_bytes bigint,
    ADD COLUMN storage_measured_at timestamptz;

-- One row per `move` job: where it is, so an interrupted move resumes or rolls back.
CREATE TABLE tenant_moves (
    job_id          uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    from_server_id  uuid NOT NULL REFERENCES tenant_servers (id),
    to_server_id    uuid NOT NULL REFERENCES tenant_servers (id),
    -- copying → switched → done, or rolled_back
    phase           text NOT NULL DEFAULT 'copying'
                    CHECK (phase IN ('copying', 'switched', 'done', 'rolled_back')),
    blocked_at      timestamptz,
    switched_at     timestamptz,
    downtime_ms     bigint,
    verified        jsonb,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
-- At most one unfinished move per tenant.
CREATE UNIQUE INDEX tenant_moves_one_live ON tenant_moves (tenant_id) WHERE phase IN ('copying', 'switched');

-- Self-hosted dev/test copies (`tenant branch`): a database and a role of their own on the
-- tenant's server.
ALTER TABLE tenant_branches
    ADD COLUMN server_id uuid REFERENCES tenant_servers (id),
    ADD COLUMN database_name text,
    ADD COLUMN role_name text,
    ADD COLUMN password_ciphertext bytea,
    ADD COLUMN backup_id uuid,
    -- Scheduled backups skip branches unless asked.
    ADD COLUMN backups_enabled boolean NOT NULL DEFAULT false,
    ADD COLUMN ready_at timestamptz;
